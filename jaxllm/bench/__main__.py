from jaxllm.bench.main import main

main()
