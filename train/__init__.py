"""Making a voice: experiment layout, data preparation, training, index building, export."""
