"""The Hugging Face hub: the one client that talks to it, the authors' published checkpoint layouts, downloads
into run folders, and the SAELens export of our runs. Imports every layer below it."""
