// Command imgpack packs static binaries into a single-layer image and writes
// it as a docker-format tarball (what `docker save` writes and
// `ctr images import` reads) under an exact name. The local cluster has no
// registry and no container engine, so its images (pause, the test server, the
// operator) are made this way and imported into containerd.
//
//	imgpack -file bin/pause:/pause -name kubevirt-imds.local/pause:v1 -out pause.tar
//	imgpack -dir out/ -entrypoint /kubevirt-imds -user 65532:65532 -name kubevirt-imds:dev -out op.tar
//	imgpack -file bin/opm:/bin/opm -tmp -user 1001 -name kubevirt-imds.local/opm:v1 -out opm.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// stringList collects a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// cISVTX is the tar header's sticky bit (archive/tar's c_ISVTX, unexported).
const cISVTX = 0o1000

// file is one file of the image: its content's source and its path in the image.
type file struct{ src, dest string }

func main() {
	var specs, args stringList
	flag.Var(&specs, "file", "SRC[:DEST]: a file to pack at DEST (default /<its base name>); repeatable")
	dir := flag.String("dir", "", "pack every regular file of this directory at the image's root, as a Dockerfile's COPY dir/ / does")
	entrypoint := flag.String("entrypoint", "", "the entrypoint (default: the first file)")
	ref := flag.String("name", "", "the image name and tag, exactly as Pods will name it (required)")
	out := flag.String("out", "", "the tarball to write (required)")
	user := flag.String("user", "", "the image's USER (e.g. 65532:65532); empty runs as root")
	flag.Var(&args, "arg", "an argument given to the entrypoint (the image's CMD; repeatable)")
	tmp := flag.Bool("tmp", false, "add /tmp, writable by every user with the sticky bit, as base images have it (for programs that run as a non-root user and write temporary files)")
	flag.Parse()
	files, err := collect(specs, *dir)
	if err != nil || len(files) == 0 || *ref == "" || *out == "" {
		if err != nil {
			fmt.Fprintln(os.Stderr, "imgpack:", err)
		}
		flag.Usage()
		os.Exit(2)
	}
	if *entrypoint == "" {
		*entrypoint = files[0].dest
	}
	if err := pack(files, *entrypoint, *ref, *out, *user, args, *tmp); err != nil {
		fmt.Fprintln(os.Stderr, "imgpack:", err)
		os.Exit(1)
	}
}

func collect(specs []string, dir string) ([]file, error) {
	var files []file
	for _, s := range specs {
		src, dest, ok := strings.Cut(s, ":")
		if !ok {
			dest = "/" + filepath.Base(src)
		}
		files = append(files, file{src: src, dest: path.Clean("/" + dest)})
	}
	if dir != "" {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				files = append(files, file{src: filepath.Join(dir, e.Name()), dest: "/" + e.Name()})
			}
		}
	}
	return files, nil
}

func pack(files []file, entrypoint, ref, out, user string, args []string, withTmp bool) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	layerTar, err := filesTar(files, withTmp)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = runtime.GOARCH
	cfg.Config = v1.Config{
		Entrypoint: []string{entrypoint},
		Cmd:        args,
		User:       user,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return err
	}
	// Write next to the target and rename, so that an interrupted run never
	// leaves a truncated tarball that a later import would trust.
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// filesTar returns a tar stream holding the files (and their parent
// directories), and /tmp if tmp; times are fixed so that the same binaries
// always give the same layer digest.
func filesTar(files []file, tmp bool) ([]byte, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].dest < files[j].dest })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	if tmp {
		dirs["/tmp"] = true
		hdr := &tar.Header{Name: "tmp/", Mode: 0o777 | cISVTX, ModTime: time.Unix(0, 0), Typeflag: tar.TypeDir, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		var parents []string
		for d := path.Dir(f.dest); d != "/" && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			parents = append([]string{d}, parents...) // outermost first
		}
		for _, d := range parents {
			hdr := &tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Typeflag: tar.TypeDir, Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
		}
		content, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		st, err := os.Stat(f.src)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{
			Name:     strings.TrimPrefix(f.dest, "/"),
			Mode:     int64(st.Mode().Perm()),
			Size:     int64(len(content)),
			ModTime:  time.Unix(0, 0),
			Typeflag: tar.TypeReg,
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(content); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
