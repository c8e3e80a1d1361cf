"""The ClientApp: a PyTorch ``NumPyClient`` adapted to Flower's Message API."""
