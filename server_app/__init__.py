"""The ServerApp: config, model, strategy, centralized evaluation, run outputs."""
