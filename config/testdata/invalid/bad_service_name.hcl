service "-kv" {
  builtin = "kv"
}
