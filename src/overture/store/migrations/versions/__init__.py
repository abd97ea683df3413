"""One module per schema revision, applied in order by ``overture db upgrade`` and at every start."""
