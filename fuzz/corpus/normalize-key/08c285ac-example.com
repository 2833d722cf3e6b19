example.com
