module github.com/chatserver/chatserver

go 1.26.8

require github.com/go-viper/mapstructure/v2 v2.4.0
