"""Framework-free ML code shared by the ClientApp and the ServerApp.

Nothing in this package imports Flower: models, datasets, partitioning and the
train/test loops are plain PyTorch/NumPy so they can be tested and reused alone.
"""
