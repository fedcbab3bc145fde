import hello

assert hello.greet("raibid") == "hello, raibid", hello.greet("raibid")
print("test_hello: 1 passed")
