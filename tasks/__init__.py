"""labforge layers: one pyinfra @deploy per layer, applied in the order deploy.py lists."""
