"""edgekit demos: runnable end to end on bundled models and data (`edgekit demo NAME`)."""
