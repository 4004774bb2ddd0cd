service "a-b" {
  builtin = "kv"
}
service "a_b" {
  env = { X = "1" }
}
