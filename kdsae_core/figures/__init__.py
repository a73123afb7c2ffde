"""Every figure of the book: one style, one catalog (figure -> data -> drawing -> sentence) for both experiments,
and the figure-data regression. Imports every layer below it, never book or cli."""
