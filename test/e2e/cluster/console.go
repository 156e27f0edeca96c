//go:build e2e

package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
)

// Console is a VMI's serial console, through KubeVirt's console
// subresource (what `virtctl console` uses): bytes typed and read as on a
// terminal.
type Console struct {
	conn *websocket.Conn

	mu     sync.Mutex
	out    bytes.Buffer
	offset int           // where the next expect starts
	grew   chan struct{} // closed and replaced when out grows
	err    error         // set when the connection ends
}

// DialConsole connects to the serial console of VMI namespace/name.
func DialConsole(ctx context.Context, cfg *rest.Config, namespace, name string) (*Console, error) {
	tlsConfig, err := rest.TLSConfigFor(cfg)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	u.Scheme = "wss"
	u.Path = strings.TrimSuffix(u.Path, "/") + fmt.Sprintf("/apis/subresources.kubevirt.io/v1/namespaces/%s/virtualmachineinstances/%s/console", namespace, name)
	header := http.Header{}
	if cfg.BearerToken != "" {
		header.Set("Authorization", "Bearer "+cfg.BearerToken)
	}
	d := websocket.Dialer{TLSClientConfig: tlsConfig, Subprotocols: []string{"plain.kubevirt.io"}}
	conn, resp, err := d.DialContext(ctx, u.String(), header) //nolint:bodyclose // the upgraded connection owns it
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("console of %s/%s: %w (HTTP %d)", namespace, name, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("console of %s/%s: %w", namespace, name, err)
	}
	c := &Console{conn: conn, grew: make(chan struct{})}
	go c.read()
	return c, nil
}

func (c *Console) read() {
	for {
		_, b, err := c.conn.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.err = err
		} else {
			// Terminals end lines with CRLF; matching is simpler without CR.
			c.out.Write(bytes.ReplaceAll(b, []byte("\r"), nil))
		}
		close(c.grew)
		c.grew = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Close ends the session.
func (c *Console) Close() error { return c.conn.Close() }

// Output is everything the console printed so far.
func (c *Console) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// Send types s.
func (c *Console) Send(s string) error {
	return c.conn.WriteMessage(websocket.BinaryMessage, []byte(s))
}

// Expect waits for re in the output after the previous match and returns
// its submatches.
func (c *Console) Expect(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	for {
		c.mu.Lock()
		tail := c.out.String()[c.offset:]
		if loc := re.FindStringSubmatchIndex(tail); loc != nil {
			m := make([]string, len(loc)/2)
			for i := range m {
				if loc[2*i] >= 0 {
					m[i] = tail[loc[2*i]:loc[2*i+1]]
				}
			}
			c.offset += loc[1]
			c.mu.Unlock()
			return m, nil
		}
		grew, err := c.grew, c.err
		c.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("console closed waiting for %q: %w", re, err)
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %q on the console: %w; last output: %q", re, ctx.Err(), lastLines(tail, 5))
		}
	}
}

// Login logs in at the getty and waits for a shell prompt, trying again
// while the login is refused: cloud-init may not have set the password yet.
func (c *Console) Login(ctx context.Context, user, password string) error {
	loginPrompt := regexp.MustCompile(`login: $`)
	outcome := regexp.MustCompile(`([$#] $)|(Login incorrect)`)
	// A newline makes the getty print its prompt again, whatever came before.
	if err := c.Send("\n"); err != nil {
		return err
	}
	for {
		if _, err := c.Expect(ctx, loginPrompt); err != nil {
			return err
		}
		if err := c.Send(user + "\n"); err != nil {
			return err
		}
		if _, err := c.Expect(ctx, regexp.MustCompile(`[Pp]assword: $`)); err != nil {
			return err
		}
		if err := c.Send(password + "\n"); err != nil {
			return err
		}
		m, err := c.Expect(ctx, outcome)
		if err != nil {
			return err
		}
		if m[1] != "" {
			return nil
		}
	}
}

// RootShell waits for the root shell the serial console's getty logs in by
// itself (the project's Debian VM image autologins root on ttyS0), and keeps
// the kernel's messages off the console: under software emulation the
// clocksource watchdog, say, prints in the middle of a command's output.
func (c *Console) RootShell(ctx context.Context) error {
	// A newline makes the shell print its prompt again, whatever came before.
	if err := c.Send("\n"); err != nil {
		return err
	}
	if _, err := c.Expect(ctx, regexp.MustCompile(`# $`)); err != nil {
		return err
	}
	_, code, err := c.Run(ctx, "dmesg -n 1")
	if err == nil && code != 0 {
		err = fmt.Errorf("dmesg -n 1 exited with status %d", code)
	}
	return err
}

// kernelMessage matches a line the kernel printed on the console (a printk
// with its timestamp), such as one already on its way when the console's
// log level was lowered.
var kernelMessage = regexp.MustCompile(`(?m)^\[\s*\d+\.\d+\] [^\n]*\n`)

// Run types a shell command (bash: the exit status comes from PIPESTATUS)
// and returns its output and exit status. The markers are printed from
// pieces, so the echo of the typed line never matches them.
func (c *Console) Run(ctx context.Context, command string) (string, int, error) {
	nonce := make([]byte, 6)
	if _, err := rand.Read(nonce); err != nil {
		return "", 0, err
	}
	n := hex.EncodeToString(nonce)
	// Through a pipe, not the terminal: programs colour what they print to
	// a terminal (iproute2 6 does by default).
	line := fmt.Sprintf("printf '%%s%%s\\n' BEGIN %s; { %s; } 2>&1 | cat; printf '%%s%%s %%d\\n' END %s ${PIPESTATUS[0]}\n", n, command, n)
	if err := c.Send(line); err != nil {
		return "", 0, err
	}
	m, err := c.Expect(ctx, regexp.MustCompile(`(?s)BEGIN`+n+`\n(.*?)END`+n+` (\d+)\n`))
	if err != nil {
		return "", 0, err
	}
	code, _ := strconv.Atoi(m[2])
	return kernelMessage.ReplaceAllString(m[1], ""), code, nil
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
