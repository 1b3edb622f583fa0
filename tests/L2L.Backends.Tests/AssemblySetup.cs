// One backend per device kind for the whole assembly; xunit.runner.json runs tests one at a time.
using L2L.TestSupport;
using Xunit;

[assembly: AssemblyFixture(typeof(BackendFixture))]
