module github.com/chatserver/chatserver

go 1.26.8

require (
	github.com/go-viper/mapstructure/v2 v2.4.0
	github.com/google/uuid v1.6.0
	golang.org/x/time v0.16.0
)
