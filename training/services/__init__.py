"""Services (writes) of the training app."""
