"""The run folder as a format: its file names, checkpoints (SAELens layout), the manifest, and a run (or the
authors' released data) read as tables. Imports common, theory and sae."""
