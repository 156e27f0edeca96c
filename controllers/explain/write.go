package explain

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// FileHeaderPrefix starts the line before each file in Write's output:
// "=== <path> (<content type>, <n> bytes)". The body follows byte for byte,
// then one newline, so that a reader can split the output on the count.
const FileHeaderPrefix = "=== "

// Write prints the report for a person: who serves the VMI, the findings,
// then each file of the dialect as the guest receives it. A body that is not
// UTF-8 text (gzip user-data, say) is replaced by a note; `--path` prints it
// raw.
func (r *Report) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	vmi := "VirtualMachineInstance " + r.Instance.String()
	switch {
	case r.Service == "":
		fmt.Fprintf(bw, "%s is not served by any MetadataService.\n", vmi)
	case r.Served():
		fmt.Fprintf(bw, "%s is served by MetadataService %s.\n", vmi, r.Service)
	default:
		fmt.Fprintf(bw, "%s is selected by MetadataService %s but not served.\n", vmi, r.Service)
	}
	if r.Secret != "" {
		fmt.Fprintf(bw, "Payload: Secret %s, %s, dialects %s.\n", r.Secret, r.Hash, dialectList(r.Dialects))
	}
	for _, f := range r.Findings {
		kind := "Note"
		if f.Blocking {
			kind = "Not served"
		}
		fmt.Fprintf(bw, "%s (%s): %s\n", kind, f.Reason, f.Message)
	}
	if len(r.Files) > 0 {
		fmt.Fprintf(bw, "\nDialect %s, as the sidecar serves it at http://169.254.169.254 (tokens left out):\n", r.Dialect)
	}
	for _, f := range r.Files {
		body := f.Body
		if !utf8.Valid(body) {
			body = []byte(fmt.Sprintf("(%d bytes of binary data; print them with --path %s)", len(f.Body), f.Path))
			fmt.Fprintf(bw, "%s%s (%s, binary)\n", FileHeaderPrefix, f.Path, f.ContentType)
		} else {
			fmt.Fprintf(bw, "%s%s (%s, %d bytes)\n", FileHeaderPrefix, f.Path, f.ContentType, len(body))
		}
		_, _ = bw.Write(body)
		_, _ = bw.WriteString("\n")
	}
	return bw.Flush()
}

// ParseFiles reads the files back from Write's output, by path: what a
// script (or a test) comparing them with a sidecar's answers needs. Binary
// bodies, which Write replaces with a one-line note, are absent.
func ParseFiles(out []byte) (map[string][]byte, error) {
	hdr := []byte(FileHeaderPrefix)
	files := map[string][]byte{}
	rest := out
	if !bytes.HasPrefix(rest, hdr) {
		i := bytes.Index(rest, append([]byte("\n"), hdr...))
		if i < 0 {
			return files, nil
		}
		rest = rest[i+1:]
	}
	for len(rest) > 0 {
		line, after, ok := bytes.Cut(rest, []byte("\n"))
		if !bytes.HasPrefix(line, hdr) || !ok {
			return nil, fmt.Errorf("want a file header, found %q", line)
		}
		p, meta, ok := strings.Cut(strings.TrimPrefix(string(line), FileHeaderPrefix), " (")
		if !ok {
			return nil, fmt.Errorf("file header %q: no description", line)
		}
		if strings.HasSuffix(meta, ", binary)") {
			_, rest, _ = bytes.Cut(after, []byte("\n"))
			continue
		}
		fields := strings.Split(strings.TrimSuffix(meta, " bytes)"), ", ")
		n, err := strconv.Atoi(fields[len(fields)-1])
		if err != nil || n+1 > len(after) || after[n] != '\n' {
			return nil, fmt.Errorf("file header %q: the length does not match the body", line)
		}
		files[p] = after[:n]
		rest = after[n+1:]
	}
	return files, nil
}
