// Command kvimage assembles an image from layer tarballs (written by GNU tar, so
// ownership, hard links, symlinks and the security.capability xattr are kept as
// SCHILY.xattr PAX records) and writes it as a docker-format tarball — what
// `docker save` writes and `ctr images import` reads — under an exact name.
// KubeVirt's images are built here without a registry or a container engine.
//
//	kvimage -name quay.io/kubevirt/virt-api:v1.8.0 -out virt-api.tar \
//	  -entrypoint /usr/bin/virt-api -user 1001 base.tar bin.tar
package main

import (
	"compress/gzip"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	ref := flag.String("name", "", "image name and tag, exactly as Pods name it (required)")
	out := flag.String("out", "", "docker-format tarball to write (required)")
	user := flag.String("user", "", "the image's USER; empty runs as root")
	workdir := flag.String("workdir", "/", "the image's working directory")
	var entrypoint, env stringList
	flag.Var(&entrypoint, "entrypoint", "an entrypoint word (repeatable, in order)")
	flag.Var(&env, "env", "KEY=VALUE added to the image environment (repeatable)")
	flag.Parse()
	if *ref == "" || *out == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: kvimage -name REF -out FILE [flags] LAYER.tar...")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if err := pack(*ref, *out, *user, *workdir, entrypoint, env, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "kvimage:", err)
		os.Exit(1)
	}
}

func pack(ref, out, user, workdir string, entrypoint, env, layerFiles []string) error {
	tag, err := name.NewTag(ref, name.StrictValidation)
	if err != nil {
		return fmt.Errorf("image name %q: %w", ref, err)
	}
	img := empty.Image
	for _, f := range layerFiles {
		// BestSpeed: the launcher layer is ~500 MB and the machine is small and busy;
		// the tarball is only read back by a local import.
		layer, err := tarball.LayerFromFile(f, tarball.WithCompressionLevel(gzip.BestSpeed))
		if err != nil {
			return fmt.Errorf("layer %s: %w", f, err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			return err
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	// A fixed date keeps the image ID a function of the layers alone.
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cfg.Config.Entrypoint = entrypoint
	cfg.Config.User = user
	cfg.Config.WorkingDir = workdir
	cfg.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := tarball.Write(tag, img, f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n", tag, d)
	return nil
}
