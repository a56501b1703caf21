// Command hello is the smallest caddy-spawn function: a CGI program that
// greets the caller from its own fresh container and echoes back which
// container (hostname) and which request (method and URI) it served.
package main

import (
	"fmt"
	"os"
)

func main() {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown (" + err.Error() + ")"
	}
	fmt.Print("Content-Type: text/plain; charset=utf-8\n\n")
	fmt.Println("Hello from a fresh container!")
	fmt.Printf("hostname: %s\n", host)
	fmt.Printf("request: %s %s\n", os.Getenv("REQUEST_METHOD"), os.Getenv("REQUEST_URI"))
}
