package instanceidentity

// Signatures is how many RSA signatures c has made.
func Signatures(c *Cache) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signed
}
