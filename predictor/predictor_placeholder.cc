// Placeholder until the predictor sources land.
