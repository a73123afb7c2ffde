"""What the book's pages and notebooks call: chapters, notebook parameters and their rules, the claims ledger,
and committing results. Imports every layer below it."""
