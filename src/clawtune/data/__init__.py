"""Training data: build examples from an agent's sessions (`build`), scrub, split, validate, the recipe's mix and
statistics, augment (with an optional teacher), and check held-out sets for leakage."""
