service "empty" {
}
