// Placeholder until the worker sources land.
