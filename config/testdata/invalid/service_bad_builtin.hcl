service "db" {
  builtin = "postgres"
}
