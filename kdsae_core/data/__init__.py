"""Text -> tokens -> activations: the token streams (packaged text, local files, hub datasets) and every layer's
residual stream from one forward pass. Imports common."""
