package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"
)

func TestCAAndNodeVerify(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey, err := ca.Parse()
	if err != nil {
		t.Fatal(err)
	}
	if !caCert.IsCA || caKey.Curve != elliptic.P256() {
		t.Fatalf("CA: IsCA=%v curve=%v, want a P-256 CA", caCert.IsCA, caKey.Curve.Params().Name)
	}
	node, err := IssueNode(ca, "pve1", []string{"10.0.0.5", "pve1.example.org"}, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := node.Parse()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || key.Curve != elliptic.P256() {
		t.Fatal("node key is not ECDSA P-256")
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	for _, name := range []string{"pve1", "localhost", "127.0.0.1", "10.0.0.5", "pve1.example.org"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other"}); err == nil {
		t.Error("certificate verified for a name it does not carry")
	}
	if !cert.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("first IP SAN = %v, want 127.0.0.1", cert.IPAddresses[0])
	}
	other, _ := NewCA("other", now)
	oc, _, _ := other.Parse()
	pool2 := x509.NewCertPool()
	pool2.AddCert(oc)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool2, DNSName: "pve1"}); err == nil {
		t.Error("node certificate verified against a foreign CA")
	}
}

func TestRenewalAndFingerprint(t *testing.T) {
	now := time.Now()
	ca, _ := NewCA("c", now)
	node, _ := IssueNode(ca, "n", nil, now)
	if NeedsRenewal(node.CertPEM, now, 30*24*time.Hour) {
		t.Error("fresh certificate reported as needing renewal")
	}
	if !NeedsRenewal(node.CertPEM, now.Add(NodeValidity), 30*24*time.Hour) {
		t.Error("certificate at end of life not reported as needing renewal")
	}
	if !NeedsRenewal([]byte("junk"), now, 0) {
		t.Error("unparsable certificate not reported as needing renewal")
	}
	fp, err := Fingerprint(node.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(fp) != 32*3-1 || strings.ToUpper(fp) != fp || strings.Count(fp, ":") != 31 {
		t.Errorf("fingerprint %q is not 32 colon-separated upper-case hex bytes", fp)
	}
}
