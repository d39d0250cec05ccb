package store

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketName = []byte("objects")

// Bolt is the embedded single-file backend on go.etcd.io/bbolt. Each write is
// one bbolt transaction, committed with fsync before Put or Delete returns.
// Digests are stored beside values so reads never rehash.
type Bolt struct {
	db *bolt.DB
}

var _ Store = (*Bolt)(nil)

// Open opens (creating if needed) the store file at path. A second process
// opening the same file waits up to five seconds and then fails, so two
// daemons never share one store.
func Open(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w (is another berth daemon running on this data dir?)", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// A stored record is the 64-byte hex digest followed by the value.
const digestLen = 64

func decode(key, rec []byte) Object {
	v := make([]byte, len(rec)-digestLen)
	copy(v, rec[digestLen:])
	return Object{Key: string(key), Digest: string(rec[:digestLen]), Value: v}
}

// Get implements Store.
func (b *Bolt) Get(ctx context.Context, key string) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, err
	}
	var obj Object
	err := b.db.View(func(tx *bolt.Tx) error {
		rec := tx.Bucket(bucketName).Get([]byte(key))
		if rec == nil {
			return fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		obj = decode([]byte(key), rec)
		return nil
	})
	return obj, err
}

// List implements Store.
func (b *Bolt) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketName).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			out = append(out, decode(k, v))
		}
		return nil
	})
	return out, err
}

func check(bk *bolt.Bucket, key string, cond Cond) error {
	cur := bk.Get([]byte(key))
	if cond.Create && cur != nil {
		return fmt.Errorf("%s: %w", key, ErrExists)
	}
	if cond.Digest != "" {
		if cur == nil {
			return fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		if string(cur[:digestLen]) != cond.Digest {
			return fmt.Errorf("%s: %w", key, ErrConflict)
		}
	}
	return nil
}

// Put implements Store.
func (b *Bolt) Put(ctx context.Context, key string, value []byte, cond Cond) (Object, error) {
	if err := ValidKey(key); err != nil {
		return Object{}, err
	}
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	d := Digest(value)
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketName)
		if err := check(bk, key, cond); err != nil {
			return err
		}
		rec := make([]byte, 0, digestLen+len(value))
		rec = append(append(rec, d...), value...)
		return bk.Put([]byte(key), rec)
	})
	if err != nil {
		return Object{}, err
	}
	return Object{Key: key, Value: append([]byte(nil), value...), Digest: d}, nil
}

// PutBatch writes objs unconditionally in one transaction: one commit and
// fsync for all (the task manager's group commit). Their digests are
// computed here; those given are ignored.
func (b *Bolt) PutBatch(ctx context.Context, objs []Object) error {
	for _, o := range objs {
		if err := ValidKey(o.Key); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(objs) == 0 {
		return nil
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketName)
		for _, o := range objs {
			rec := make([]byte, 0, digestLen+len(o.Value))
			rec = append(append(rec, Digest(o.Value)...), o.Value...)
			if err := bk.Put([]byte(o.Key), rec); err != nil {
				return fmt.Errorf("%s: %w", o.Key, err)
			}
		}
		return nil
	})
}

// Delete implements Store.
func (b *Bolt) Delete(ctx context.Context, key string, cond Cond) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketName)
		if bk.Get([]byte(key)) == nil {
			return fmt.Errorf("%s: %w", key, ErrNotFound)
		}
		if err := check(bk, key, cond); err != nil {
			return err
		}
		return bk.Delete([]byte(key))
	})
}

// DeleteBatch deletes, in one transaction (one fsync), each of objs whose
// stored value still has the digest o.Digest, as Delete with
// Cond{Digest: o.Digest} would, and returns the keys it deleted; keys
// that are gone or changed are left out, not errors.
func (b *Bolt) DeleteBatch(ctx context.Context, objs []Object) ([]string, error) {
	for _, o := range objs {
		if err := ValidKey(o.Key); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return nil, nil
	}
	var deleted []string
	err := b.db.Update(func(tx *bolt.Tx) error {
		deleted = deleted[:0]
		bk := tx.Bucket(bucketName)
		for _, o := range objs {
			if bk.Get([]byte(o.Key)) == nil || check(bk, o.Key, Cond{Digest: o.Digest}) != nil {
				continue
			}
			if err := bk.Delete([]byte(o.Key)); err != nil {
				return fmt.Errorf("%s: %w", o.Key, err)
			}
			deleted = append(deleted, o.Key)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return deleted, nil
}

// Close implements Store.
func (b *Bolt) Close() error { return b.db.Close() }
