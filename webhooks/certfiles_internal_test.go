package webhooks

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteCertFiles(t *testing.T) {
	pair := map[string][]byte{certFileName: []byte("cert 1"), keyFileName: []byte("key 1"), "ca.key": []byte("ca key")}
	rotated := map[string][]byte{certFileName: []byte("cert 2"), keyFileName: []byte("key 2")}
	tests := []struct {
		name        string
		before      map[string][]byte // files in the directory
		data        map[string][]byte // the Secret's
		wantChanged bool
		wantFiles   map[string][]byte
	}{
		{name: "the rotator has not written the Secret yet", data: nil, wantFiles: map[string][]byte{}},
		{name: "only a certificate", data: map[string][]byte{certFileName: []byte("cert 1")}, wantFiles: map[string][]byte{}},
		{
			name: "issued: the serving pair, not the CA's key", data: pair, wantChanged: true,
			wantFiles: map[string][]byte{certFileName: []byte("cert 1"), keyFileName: []byte("key 1")},
		},
		{
			name:   "unchanged",
			before: map[string][]byte{certFileName: []byte("cert 1"), keyFileName: []byte("key 1")}, data: pair,
			wantFiles: map[string][]byte{certFileName: []byte("cert 1"), keyFileName: []byte("key 1")},
		},
		{
			name:   "rotated",
			before: map[string][]byte{certFileName: []byte("cert 1"), keyFileName: []byte("key 1")}, data: rotated, wantChanged: true,
			wantFiles: map[string][]byte{certFileName: []byte("cert 2"), keyFileName: []byte("key 2")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range tt.before {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			changed, err := writeCertFiles(dir, tt.data)
			if err != nil {
				t.Fatalf("writeCertFiles: %v", err)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]byte{}
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(dir, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				got[e.Name()] = b
				if info, _ := e.Info(); info.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600", e.Name(), info.Mode().Perm())
				}
			}
			if len(got) != len(tt.wantFiles) {
				t.Errorf("files %v, want %v", keysOf(got), keysOf(tt.wantFiles))
			}
			for name, want := range tt.wantFiles {
				if string(got[name]) != string(want) {
					t.Errorf("%s = %q, want %q", name, got[name], want)
				}
			}
		})
	}
}

func keysOf(m map[string][]byte) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
