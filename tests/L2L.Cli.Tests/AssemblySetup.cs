// One CPU backend for the whole assembly (kernels load once); xunit.runner.json runs tests one at a time.
using L2L.TestSupport;
using Xunit;

[assembly: AssemblyFixture(typeof(BackendFixture))]
