"""The model in use: the model folder, predictions on new images, the inspection service."""
