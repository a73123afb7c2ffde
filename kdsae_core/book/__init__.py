"""What the book's pages and notebooks call: chapters, notebook parameters and their rules, the claims ledger,
and committing results. Imports every layer below it."""

import warnings

# A re-executed chapter (rerun = True) shows its training and measuring as text progress bars, which tqdm.auto falls
# back to when there is no widget frontend (papermill, the book's build): without its warning that it did.
warnings.filterwarnings("ignore", message="IProgress not found")
