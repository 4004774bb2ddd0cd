service "kv" {
  builtin = "kv"
}
service "kv" {
  builtin = "kv"
}
