"""Compiling: lower a rewritten model on the best available target (saying why each skipped one was
skipped), check it against the rewritten graph, and save a deployable artifact with a manifest."""
