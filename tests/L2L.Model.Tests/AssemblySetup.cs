// One backend per device kind for the whole assembly (kernels load once), for the tests that run on a device.
using L2L.TestSupport;
using Xunit;

[assembly: AssemblyFixture(typeof(BackendFixture))]
