package guest

import "testing"

func TestValidateID(t *testing.T) {
	tests := []struct {
		id      int
		wantErr string
	}{
		{id: 100},
		{id: 101},
		{id: 999999999},
		{id: 42, wantErr: "guest ID 42 is out of range: use 100 to 999999999"},
		{id: 99, wantErr: "guest ID 99 is out of range: use 100 to 999999999"},
		{id: 0, wantErr: "guest ID 0 is out of range: use 100 to 999999999"},
		{id: -1, wantErr: "guest ID -1 is out of range: use 100 to 999999999"},
		{id: 1000000000, wantErr: "guest ID 1000000000 is out of range: use 100 to 999999999"},
	}
	for _, tt := range tests {
		err := ValidateID(tt.id)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ValidateID(%d) = %v, want nil", tt.id, err)
		case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
			t.Errorf("ValidateID(%d) = %v, want %q", tt.id, err, tt.wantErr)
		}
	}
}

func TestKeyOrderIsNumeric(t *testing.T) {
	if got := key(101); got != "guests/000000101" {
		t.Errorf("key(101) = %q", got)
	}
	if !(key(999) < key(1000)) || !(key(99999999) < key(999999999)) {
		t.Error("padded keys do not sort numerically")
	}
	id, err := idFromKey(key(123456789))
	if err != nil || id != 123456789 {
		t.Errorf("idFromKey round trip = %d, %v", id, err)
	}
}
