service "settings" {
  env = { FEATURE_X = "on" }
}
