package server

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

const (
	// DefaultMaxConns caps the guest's open connections. A guest needs a
	// handful (cloud-init opens one per request, an agent keeps one or
	// two). Each costs the sidecar some 30 KiB under attack (a goroutine
	// whose stack grows while a head is vetted, net/http's 4 KiB read and
	// write buffers, the head buffer below, and the garbage of replacing
	// it): 256 keep the sidecar's peak well under the container's 64 MiB
	// (BenchmarkSidecarHeldConnections in test/bench).
	DefaultMaxConns = 256
	// DefaultMaxLongPolls caps the long polls waiting at once; each holds
	// a connection.
	DefaultMaxLongPolls = 64

	// lingerTime bounds how long a connection closed after a refused head
	// keeps reading what the guest still sends, so that the refusal is not
	// lost to a reset (RFC 9112 §9.6).
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 64 << 10

	// maxVictimScan bounds the connections looked at to choose one to
	// shed.
	maxVictimScan = 64
	// newGrace is how long a new connection has to send its request
	// before it may make room for another: a client sends it at once.
	newGrace = 100 * time.Millisecond
	// stallGrace is how long a request may take before its connection may
	// make room for another: the sidecar answers from memory in well under
	// a millisecond, so one still being answered after this is one whose
	// response the guest does not read.
	stallGrace = 100 * time.Millisecond
	// heavyWriter is how much a connection may have sent before, while
	// busy, it counts as pulling responses it does not read: more than the
	// socket buffers between the sidecar and the guest hold.
	heavyWriter = 8 << 20

	// headBufInitial is a connection's head buffer at first; it grows to
	// maxHeaderBytes+1 only for heads that need it.
	headBufInitial = 1 << 10
)

// refusedHead is what net/http reads in place of a refused head: a request
// the handler recognises by its position on the connection (see gateConn),
// so no bytes a guest can send stand for it.
var refusedHead = []byte("GET / HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")

// phase is where a connection stands, for choosing which to shed.
type phase int

const (
	// phaseNew: accepted, its first request not complete yet.
	phaseNew phase = iota
	// phaseActive: a complete request is being answered.
	phaseActive
	// phaseIdle: between requests on a kept-alive connection, or lingering
	// after a refusal.
	phaseIdle
)

// connKey carries a request's *gateConn in its context.
type connKey struct{}

// gateConn is an accepted guest connection. Its Read hands net/http only
// request heads vetHead accepted, each followed by exactly the body its
// Content-Length announces; a refused head is replaced by refusedHead and
// nothing after it is read. The handler recognises refusedHead as the
// request whose index equals refused.
type gateConn struct {
	net.Conn
	tcp *net.TCPConn
	srv *Server

	// Reading side: net/http never reads concurrently from a connection.
	buf        []byte
	start, end int    // buf[start:end] is read but not yet vetted
	scanned    int    // buf[start:scanned] holds no end of head
	out        []byte // vetted bytes not yet delivered
	bodyLeft   int64
	done       bool // refusedHead was queued: EOF after it
	heads      int64

	// refused is the index (from 1) of the request standing for a refused
	// head; refusal says why. refusal is written before refused.
	refused atomic.Int64
	refusal *refusal

	// written counts the bytes sent: a connection pulling responses it
	// does not read has sent far more than one answering a request.
	written atomic.Int64

	// Handler side: requests on one connection are handled one after the
	// other, on the connection's goroutine.
	served  int64
	limiter *rate.Limiter

	// Guarded by connTracker.mu.
	phase    phase
	since    time.Time
	longPoll bool
	elem     *list.Element
}

func (c *gateConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.done {
			return 0, io.EOF
		}
		if c.bodyLeft > 0 {
			if c.end > c.start {
				n := int(min(int64(c.end-c.start), c.bodyLeft))
				c.out = c.buf[c.start : c.start+n]
				c.start += n
				c.bodyLeft -= int64(n)
				continue
			}
			n, err := c.Conn.Read(p[:min(int64(len(p)), c.bodyLeft)])
			c.bodyLeft -= int64(n)
			return n, err
		}
		// Only new bytes are searched: a guest sending a byte at a time
		// costs linear work, not quadratic.
		from := max(c.start, c.scanned-len(headEnd)+1)
		if i := bytes.Index(c.buf[from:c.end], headEnd); i >= 0 {
			head := c.buf[c.start : from+i+len(headEnd)]
			c.start += len(head)
			c.scanned = c.start
			c.heads++
			n, ref := vetHead(head)
			if ref != nil {
				c.refuse(ref)
				continue
			}
			c.out, c.bodyLeft = head, n
			continue
		}
		if c.end-c.start > maxHeaderBytes {
			c.heads++
			c.refuse(&refusal{code: http.StatusRequestHeaderFieldsTooLarge, reason: reasonHeaderSize})
			continue
		}
		c.scanned = c.end
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// awaitHead reads until the first head is in whole or over the limit,
// within timeout of now.
func (c *gateConn) awaitHead(timeout time.Duration) error {
	if err := c.Conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	for {
		from := max(c.start, c.scanned-len(headEnd)+1)
		if bytes.Contains(c.buf[from:c.end], headEnd) || c.end-c.start > maxHeaderBytes {
			// net/http sets its own deadlines.
			return c.Conn.SetReadDeadline(time.Time{})
		}
		c.scanned = c.end
		if err := c.fill(); err != nil {
			return err
		}
	}
}

func (c *gateConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// fill reads more of a head, at most one byte past the longest head
// allowed, so a connection buffers no more than that.
func (c *gateConn) fill() error {
	if c.end == len(c.buf) && c.start > 0 {
		n := copy(c.buf, c.buf[c.start:c.end])
		c.scanned -= c.start
		c.start, c.end = 0, n
	}
	if c.end == len(c.buf) {
		grown := make([]byte, min(max(2*len(c.buf), headBufInitial), maxHeaderBytes+1))
		copy(grown, c.buf[:c.end])
		c.buf = grown
	}
	n, err := c.Conn.Read(c.buf[c.end:])
	c.end += n
	if n > 0 {
		// Vet what arrived before reporting an error with it.
		return nil
	}
	return err
}

func (c *gateConn) refuse(ref *refusal) {
	c.refusal = ref
	c.refused.Store(c.heads)
	c.out, c.done = refusedHead, true
	c.buf, c.start, c.end, c.scanned = nil, 0, 0, 0
}

// refusalOf returns why the connection's current request was refused by
// its framing, or nil. It counts the request: call it once per request.
func (c *gateConn) refusalOf() *refusal {
	c.served++
	if c.refused.Load() == c.served {
		return c.refusal
	}
	return nil
}

// Close lingers after a refusal: it stops sending, then reads what the
// guest still sends for a moment, so that closing with unread data does
// not reset the connection before the guest has read the refusal.
func (c *gateConn) Close() error {
	if c.refused.Load() != 0 && c.tcp != nil {
		c.srv.conns.setPhase(c, phaseIdle)
		_ = c.tcp.CloseWrite()
		_ = c.tcp.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.CopyN(io.Discard, c.tcp, lingerBytes)
	}
	return c.Conn.Close()
}

// shed closes c at once with a reset: no FIN exchange, no TIME_WAIT.
func shed(c net.Conn) {
	if tcp, ok := c.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = c.Close()
}

// connTracker keeps the guest's connections under the cap. At the cap a
// new connection takes the place of the one waiting longest without a
// request being answered (idle, or still sending its first head), else of
// a stalled one; only when every connection is answering a request or
// holding a long poll is the new one refused. So holding connections open
// buys a guest nothing: the next connection replaces them, while the ones
// that sent a complete request are still answered.
type connTracker struct {
	max int
	mu  sync.Mutex
	n   int
	// by phase, each ordered by when its connections entered it.
	lists [3]list.List
}

// admit registers c, shedding another connection if the cap is reached.
// It reports false when c must be refused.
func (t *connTracker) admit(c *gateConn, now time.Time) (bool, *gateConn, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var victim *gateConn
	var why string
	if t.n >= t.max {
		victim, why = t.victim(now)
		if victim == nil {
			return false, nil, reasonConnFull
		}
		t.removeLocked(victim)
	}
	c.phase, c.since = phaseNew, now
	c.elem = t.lists[phaseNew].PushBack(c)
	t.n++
	return true, victim, why
}

func (t *connTracker) victim(now time.Time) (*gateConn, string) {
	var idle, fresh, waiting *gateConn
	if e := t.lists[phaseIdle].Front(); e != nil {
		idle = e.Value.(*gateConn)
	}
	// A connection still without a request may just not have had the
	// time to send it, or have sent it while its goroutine has not run
	// yet: one younger than newGrace, or with bytes waiting in its socket,
	// is passed over as long as others are there to take. A guest holding
	// connections open has nothing waiting; a busy sidecar must not drop
	// requests that are on their way.
	n := 0
	for e := t.lists[phaseNew].Front(); e != nil && n < maxVictimScan; e, n = e.Next(), n+1 {
		c := e.Value.(*gateConn)
		if fresh == nil {
			fresh = c
		}
		if now.Sub(c.since) < newGrace {
			// Ordered by arrival: the rest are younger.
			break
		}
		if c.unread() == 0 {
			waiting = c
			break
		}
	}
	switch {
	case idle != nil && (waiting == nil || idle.since.Before(waiting.since)):
		return idle, reasonConnIdle
	case waiting != nil:
		return waiting, reasonConnIncomplete
	}
	// Then the request answered longest, if it has taken over stallGrace:
	// a guest reading its responses keeps a connection busy for
	// microseconds, one that does not read them for as long as the write
	// timeout. Ordered by start: the first one that is not a long poll.
	var busy *gateConn
	for e := t.lists[phaseActive].Front(); e != nil; e = e.Next() {
		if c := e.Value.(*gateConn); !c.longPoll {
			busy = c
			break
		}
	}
	if busy != nil && now.Sub(busy.since) >= stallGrace {
		return busy, reasonConnStalled
	}
	// Or one that has sent more than a guest reading its answers could
	// leave unread: it pulls responses it does not read.
	var heavy *gateConn
	for e := t.lists[phaseActive].Front(); e != nil; e = e.Next() {
		if c := e.Value.(*gateConn); !c.longPoll && c.written.Load() >= heavyWriter &&
			(heavy == nil || c.written.Load() > heavy.written.Load()) {
			heavy = c
		}
	}
	if heavy != nil {
		return heavy, reasonConnStalled
	}
	// Everything is young: a guest reopening connections as fast as they
	// are replaced. The oldest still without a request goes first, so a
	// request being answered is kept; only when there is none does the
	// busy one that has sent the most go, so that nobody is locked out.
	if fresh != nil {
		return fresh, reasonConnIncomplete
	}
	for e := t.lists[phaseActive].Front(); e != nil; e = e.Next() {
		if c := e.Value.(*gateConn); !c.longPoll && c.written.Load() > busy.written.Load() {
			busy = c
		}
	}
	if busy != nil {
		return busy, reasonConnStalled
	}
	return nil, ""
}

func (t *connTracker) setPhase(c *gateConn, p phase) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.elem == nil || c.phase == p {
		return
	}
	t.lists[c.phase].Remove(c.elem)
	c.phase, c.since = p, time.Now()
	c.elem = t.lists[p].PushBack(c)
}

func (t *connTracker) setLongPoll(c *gateConn, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c.longPoll = on
}

func (t *connTracker) remove(c *gateConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(c)
}

func (t *connTracker) removeLocked(c *gateConn) {
	if c.elem == nil {
		return
	}
	t.lists[c.phase].Remove(c.elem)
	c.elem = nil
	t.n--
}

func (t *connTracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// guardedListener admits connections through the tracker and wraps them
// in gateConn. It hands a connection to net/http only once its first head
// has arrived whole (or overflowed, or the header timeout passed): until
// then it costs a small goroutine and what the guest sent, not net/http's
// goroutine and buffers, so connections held open without a request stay
// cheap. A refused connection costs an accept and a reset.
type guardedListener struct {
	net.Listener
	s *Server
	// ready carries connections whose first head is in.
	ready chan *gateConn
	// done is closed when the accept loop ends, with err set before.
	done chan struct{}
	err  error

	mu      sync.Mutex
	waiting map[*gateConn]struct{}
	closed  bool
}

func newGuardedListener(ln net.Listener, s *Server) *guardedListener {
	l := &guardedListener{Listener: ln, s: s, ready: make(chan *gateConn), done: make(chan struct{}),
		waiting: map[*gateConn]struct{}{}}
	go l.acceptLoop()
	return l
}

// acceptLoop runs until the listener is closed.
func (l *guardedListener) acceptLoop() {
	defer close(l.done)
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.err = err
				return
			}
			// Out of file descriptors or similar: as net/http's Serve
			// does, back off and try again.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.s.log.Error(err, "accepting a guest connection", "retryIn", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		// Let the connections already accepted run first: with one
		// processor (the container's CPU limit) a guest opening
		// connections as fast as it can would otherwise keep this loop
		// running while the goroutines of the connections it replaced
		// wait to release their memory, and requests wait to be read.
		runtime.Gosched()
		gc := &gateConn{Conn: c, srv: l.s}
		gc.tcp, _ = c.(*net.TCPConn)
		ok, victim, why := l.s.conns.admit(gc, time.Now())
		// Counted before the reset: whoever sees it finds it counted.
		if victim != nil {
			l.s.shedConn(why, victim.RemoteAddr())
			shed(victim.Conn)
		}
		if !ok {
			l.s.shedConn(why, c.RemoteAddr())
			shed(c)
			continue
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			l.s.conns.remove(gc)
			_ = c.Close()
			continue
		}
		l.waiting[gc] = struct{}{}
		l.mu.Unlock()
		go l.awaitHead(gc)
	}
}

// awaitHead hands gc to net/http once its first head is in, or closes it.
func (l *guardedListener) awaitHead(gc *gateConn) {
	err := gc.awaitHead(l.s.readHeaderTimeout)
	l.mu.Lock()
	delete(l.waiting, gc)
	l.mu.Unlock()
	if err == nil {
		select {
		case l.ready <- gc:
			return
		case <-l.done:
		}
	}
	l.s.conns.remove(gc)
	_ = gc.Conn.Close()
}

func (l *guardedListener) Accept() (net.Conn, error) {
	select {
	case gc := <-l.ready:
		return gc, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close stops accepting and closes the connections still sending their
// first head: net/http does not know them yet.
func (l *guardedListener) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	for gc := range l.waiting {
		_ = gc.Conn.Close()
	}
	l.mu.Unlock()
	return err
}

// connState follows net/http's view of each connection.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	gc, ok := c.(*gateConn)
	if !ok {
		return
	}
	switch st {
	case http.StateActive:
		s.conns.setPhase(gc, phaseActive)
	case http.StateIdle:
		s.conns.setPhase(gc, phaseIdle)
	case http.StateClosed, http.StateHijacked:
		s.conns.remove(gc)
	}
}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if gc, ok := c.(*gateConn); ok {
		return context.WithValue(ctx, connKey{}, gc)
	}
	return ctx
}

func connOf(r *http.Request) *gateConn {
	gc, _ := r.Context().Value(connKey{}).(*gateConn)
	return gc
}
