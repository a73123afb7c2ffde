"""The book: what the chapters call, their parameters' rules, the claims ledger."""

import warnings

# A re-executed chapter (rerun = True) shows its training and measuring as text progress bars, which tqdm.auto falls
# back to when there is no widget frontend (papermill, the book's build): without its warning that it did.
warnings.filterwarnings("ignore", message="IProgress not found")
