package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	wire "github.com/berthhq/berth/api"
)

func (e *env) tokenCmd() *cobra.Command {
	c := &cobra.Command{Use: "token", Short: "Manage API tokens"}
	var in wire.TokenCreate
	var expire string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an API token; its secret is printed once",
		Args:  exactArgs(1, "a token name"),
		RunE: func(c *cobra.Command, args []string) error {
			in.Name = args[0]
			if expire != "" {
				d, err := time.ParseDuration(expire)
				if err != nil {
					return usageError{fmt.Errorf("--expire: %w (use a duration like 720h)", err)}
				}
				in.Expire = time.Now().Add(d).Unix()
			}
			var sec wire.TokenSecret
			if err := e.do(c.Context(), "POST", "/api/v1/access/tokens", in, &sec); err != nil {
				return err
			}
			return e.show(sec, func(w io.Writer) {
				kv(w, "token", sec.Token.Name, "role", sec.Token.Role, "secret", sec.Value)
				fmt.Fprintln(w, "The secret is shown only now. Use it as: Authorization: Bearer <secret>")
			})
		},
	}
	create.Flags().StringVar(&in.Role, "role", wire.RoleAuditor, "admin, operator or auditor")
	create.Flags().StringVar(&in.Comment, "comment", "", "free text")
	create.Flags().StringVar(&expire, "expire", "", "lifetime, e.g. 720h (default: no expiry)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List API tokens",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var toks []wire.Token
			if err := e.do(c.Context(), "GET", "/api/v1/access/tokens", nil, &toks); err != nil {
				return err
			}
			return e.show(toks, func(w io.Writer) {
				row(w, "NAME", "ROLE", "CREATED", "EXPIRE", "COMMENT")
				for _, t := range toks {
					row(w, t.Name, t.Role, ts(t.Created), ts(t.Expire), dash(t.Comment))
				}
			})
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Revoke an API token",
		Args:  exactArgs(1, "a token name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.do(c.Context(), "DELETE", "/api/v1/access/tokens/"+args[0], nil, nil)
		},
	}
	c.AddCommand(create, list, remove)
	return c
}

// readPassword takes the password from $BERTH_PASSWORD, a terminal prompt,
// or the first line of stdin.
func (e *env) readPassword(c *cobra.Command) (string, error) {
	if p := os.Getenv("BERTH_PASSWORD"); p != "" {
		return p, nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(e.stderr, "Password: ")
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(e.stderr)
		return string(b), err
	}
	line, err := bufio.NewReader(c.InOrStdin()).ReadString('\n')
	if err != nil && line == "" {
		return "", usageError{fmt.Errorf("no password: set BERTH_PASSWORD or pipe it on stdin")}
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (e *env) userCmd() *cobra.Command {
	c := &cobra.Command{Use: "user", Short: "Manage local users (realm berth)"}
	var in wire.UserCreate
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user; the password comes from $BERTH_PASSWORD, a prompt or stdin",
		Args:  exactArgs(1, "a user name"),
		RunE: func(c *cobra.Command, args []string) error {
			in.Name = args[0]
			p, err := e.readPassword(c)
			if err != nil {
				return err
			}
			in.Password = p
			var u wire.User
			if err := e.do(c.Context(), "POST", "/api/v1/access/users", in, &u); err != nil {
				return err
			}
			return e.show(u, func(w io.Writer) { kv(w, "user", u.Name+"@berth", "role", u.Role) })
		},
	}
	add.Flags().StringVar(&in.Role, "role", wire.RoleAuditor, "admin, operator or auditor")
	add.Flags().StringVar(&in.Comment, "comment", "", "free text")
	var upd wire.UserUpdate
	var role, comment string
	var enable, disable, passwd bool
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Change a user's role, comment, enabled flag or (--password) password",
		Args:  exactArgs(1, "a user name"),
		RunE: func(c *cobra.Command, args []string) error {
			if c.Flags().Changed("role") {
				upd.Role = &role
			}
			if c.Flags().Changed("comment") {
				upd.Comment = &comment
			}
			if enable || disable {
				v := enable
				upd.Enabled = &v
			}
			if passwd {
				p, err := e.readPassword(c)
				if err != nil {
					return err
				}
				upd.Password = &p
			}
			var u wire.User
			if err := e.do(c.Context(), "PUT", "/api/v1/access/users/"+args[0], upd, &u); err != nil {
				return err
			}
			return e.show(u, func(w io.Writer) { kv(w, "user", u.Name+"@berth", "role", u.Role, "enabled", u.Enabled) })
		},
	}
	set.Flags().StringVar(&role, "role", "", "admin, operator or auditor")
	set.Flags().StringVar(&comment, "comment", "", "free text")
	set.Flags().BoolVar(&enable, "enable", false, "enable the account")
	set.Flags().BoolVar(&disable, "disable", false, "disable the account")
	set.Flags().BoolVar(&passwd, "password", false, "set a new password")
	list := &cobra.Command{
		Use:   "list",
		Short: "List users",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(c *cobra.Command, _ []string) error {
			var us []wire.User
			if err := e.do(c.Context(), "GET", "/api/v1/access/users", nil, &us); err != nil {
				return err
			}
			return e.show(us, func(w io.Writer) {
				row(w, "USER", "ROLE", "ENABLED", "CREATED", "COMMENT")
				for _, u := range us {
					row(w, u.Name+"@berth", u.Role, u.Enabled, ts(u.Created), dash(u.Comment))
				}
			})
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a user",
		Args:  exactArgs(1, "a user name"),
		RunE: func(c *cobra.Command, args []string) error {
			return e.do(c.Context(), "DELETE", "/api/v1/access/users/"+args[0], nil, nil)
		},
	}
	c.AddCommand(add, set, list, remove)
	return c
}
