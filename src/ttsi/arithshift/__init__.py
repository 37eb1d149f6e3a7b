"""ArithShift: the embedded arithmetic word-problem setting (its derivation and its model's recipe)."""
