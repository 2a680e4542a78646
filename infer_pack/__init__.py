"""Running a voice: model blocks, file formats, audio, pitch, content encoder, retrieval, conversion."""
