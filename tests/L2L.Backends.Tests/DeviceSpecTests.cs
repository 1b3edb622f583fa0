// Parsing --device / L2L_DEVICE and selecting devices.
using L2L.Backends;
using Xunit;

namespace L2L.Backends.Tests;

public sealed class DeviceSpecTests
{
    [Theory]
    [InlineData("auto", DeviceKind.Auto, 0)]
    [InlineData("CPU", DeviceKind.Cpu, 0)]
    [InlineData("cuda", DeviceKind.Cuda, 0)]
    [InlineData("cuda:1", DeviceKind.Cuda, 1)]
    [InlineData(" opencl:2 ", DeviceKind.OpenCL, 2)]
    public void ParsesKindAndIndex(string text, DeviceKind kind, int index)
    {
        Assert.Equal(new DeviceSpec(kind, index), DeviceSpec.Parse(text));
    }

    [Theory]
    [InlineData("tpu")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:x")]
    [InlineData("auto:1")]
    public void RejectsMalformedSpecs(string text)
    {
        var e = Assert.Throws<FormatException>(() => DeviceSpec.Parse(text));
        Assert.Contains(text.Trim(), e.Message);
    }

    [Fact]
    public void ExplicitOptionWinsOverAuto()
    {
        Assert.Equal(new DeviceSpec(DeviceKind.Cpu), DeviceSpec.Resolve("cpu"));
    }

    [Fact]
    public void CpuIsAlwaysListedAndAutoFallsBackToIt()
    {
        var devices = DeviceCatalog.List();
        Assert.Contains(devices, d => d.Kind == DeviceKind.Cpu && d.MaxGroupSize > 0 && d.WarpSize > 0);
        var auto = DeviceCatalog.AutoKind(devices);
        Assert.Equal(devices.Any(d => d.Kind == DeviceKind.Cuda) ? DeviceKind.Cuda
            : devices.Any(d => d.Kind == DeviceKind.OpenCL) ? DeviceKind.OpenCL : DeviceKind.Cpu, auto);
    }

    [Fact]
    public void AbsentDeviceIsAClearErrorListingWhatIsPresent()
    {
        var e = Assert.Throws<DeviceNotFoundException>(() => Backend.Create(new DeviceSpec(DeviceKind.Cpu, 7)));
        Assert.Contains("cpu:0", e.Message);
        Assert.Contains("--device", e.Message);
    }

    [Fact]
    public void CpuShapeOverrideIsValidated()
    {
        var device = DeviceCatalog.CreateCpuDevice("4,2,1");
        Assert.Equal(8, device.MaxNumThreadsPerGroup);
        Assert.Throws<FormatException>(() => DeviceCatalog.CreateCpuDevice("4,x,1"));
    }
}
