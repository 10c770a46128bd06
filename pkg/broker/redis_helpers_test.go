package broker_test

import (
	"fmt"
	"time"
)

func frameOf(id string, n int) []byte {
	return fmt.Appendf(nil, `{"id":%q,"type":"message","room":"r","client_id":1,"username":"u","body":"%d","datetime":"","ts":%d}`,
		id, n, time.Now().UnixMilli())
}
