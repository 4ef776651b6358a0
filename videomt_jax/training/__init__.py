"""Training: set-prediction matcher and loss (`matcher`, `losses`, `points`); optimizer and train step live beside them."""
