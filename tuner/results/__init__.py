"""Measurements as data: the typed records of a results file (`records`), the file itself
(`store`: append, torn-tail repair, read back), run folders and their lock (`rundir`), the
environment a run was measured in (`environment`), and statistics computed from stored
samples (`stats`)."""
