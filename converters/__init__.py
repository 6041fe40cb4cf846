"""Weight converters: Hugging Face state dicts (both ways), Keras files, SavedModel and TFLite."""
