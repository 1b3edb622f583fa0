// Data parallel in 16-bit precision: two devices' 16-bit gradients are widened before the FP32 device-order sum, so
// the update equals the FP32 data-parallel server's on the widened gradients bit for bit, with half the gradient bytes.
using L2L.Backends;
using L2L.Kernels;
using L2L.Model;
using L2L.TestSupport;
using L2L.Training.Distributed;
using L2L.Training.Optim;
using L2L.Training.Parallel;
using L2L.Training.Update;
using Xunit;
using Half = ILGPU.Half;

namespace L2L.Training.Tests;

public sealed class ParallelParamServer16Tests(BackendFixture fixture, SecondCpuDevice second) : IClassFixture<SecondCpuDevice>
{
    private static ushort Round(Precision precision, float x) =>
        precision == Precision.Bf16 ? Bf16.RoundBits(x) : BitConverter.HalfToUInt16Bits((System.Half)x);

    private static float Widen(Precision precision, ushort bits) =>
        precision == Precision.Bf16 ? BitConverter.UInt32BitsToSingle((uint)bits << 16) : (float)BitConverter.UInt16BitsToHalf(bits);

    [Theory]
    [InlineData(Precision.Bf16, UpdateMode.Eager)]
    [InlineData(Precision.Fp16, UpdateMode.Eager)]
    [InlineData(Precision.Bf16, UpdateMode.Deferred)]
    public void TwoDevices16BitGradientsAreWidenedBeforeTheSum(Precision precision, UpdateMode mode)
    {
        Backend[] devices = [fixture.Get(DeviceKind.Cpu), second.Backend];
        // Wide enough that the embedding has its own staging buffer; the blocks share the ring.
        var layout = new ModelLayout(new GptConfig(VocabSize: 512, MaxPositions: 16, Channels: 16, Layers: 2, Heads: 2));
        EagerParamServer Server(Precision p) => new(devices[0], layout, Models.LayerInitializer(layout, 6), new OptimizerSettings(OptimizerKind.AdamW, 1e-2f),
            new LearningRateSchedule(ScheduleKind.Constant, 1e-2f), threads: 2, mode: mode,
            parallel: new ParallelSetup(devices, new SingleProcessCollectives()), precision: p);
        using var eps16 = Server(precision);
        using var eps32 = Server(Precision.Fp32);
        EagerParamServer[] views16 = [eps16.Replica(0), eps16.Replica(1)];
        EagerParamServer[] views32 = [eps32.Replica(0), eps32.Replica(1)];
        var buffers = new List<IDisposable>();
        try
        {
            var order = layout.Layers.Select(l => l.Index).Reverse().ToArray();
            foreach (var i in order)
            {
                var n = (int)layout.Layers[i].Length;
                for (var d = 0; d < devices.Length; d++)
                {
                    var bits = TestData.Normal(20 + 2 * i + d, n, scale: 0.05).Select(x => Round(precision, x)).ToArray();
                    var g16 = devices[d].Upload(bits, "test.grads16");
                    var g32 = devices[d].Upload(bits.Select(b => Widen(precision, b)).ToArray(), "test.grads32");
                    buffers.Add(g16);
                    buffers.Add(g32);
                    if (precision == Precision.Bf16)
                        views16[d].EnqueueGradients(i, devices[d].CopyStream, g16.View.Cast<Bf16>());
                    else
                        views16[d].EnqueueGradients(i, devices[d].CopyStream, g16.View.Cast<Half>());
                    views32[d].EnqueueGradients(i, devices[d].CopyStream, g32.View);
                    devices[d].CopyStream.Synchronize();
                }
                if (mode == UpdateMode.Eager)
                {
                    for (var d = 0; d < devices.Length; d++)
                    {
                        views16[d].BeginUpdate(i, 0);
                        views32[d].BeginUpdate(i, 0);
                    }
                }
            }
            if (mode == UpdateMode.Deferred)
            {
                var forward = order.Reverse().ToArray();
                for (var d = 0; d < devices.Length; d++)
                {
                    views16[d].BeginUpdatesInOrder(forward, 0, _ => 1, _ => 1f);
                    views32[d].BeginUpdatesInOrder(forward, 0, _ => 1, _ => 1f);
                }
            }
            var after32 = eps32.SnapshotWeights();
            var after16 = eps16.SnapshotWeights();
            TensorAssert.Equal(TrainingHarness.Flatten(after32), TrainingHarness.Flatten(after16), "masters after the reduced update");

            // Each device fetches the new 16-bit copy: the reduced update's masters rounded to nearest even.
            foreach (var layer in layout.Layers)
            {
                for (var d = 0; d < devices.Length; d++)
                {
                    using var copy = devices[d].Zeros<ushort>(layer.Length, "test.copy");
                    if (precision == Precision.Bf16)
                        views16[d].EnqueueFetch(layer.Index, devices[d].CopyStream, copy.View.Cast<Bf16>());
                    else
                        views16[d].EnqueueFetch(layer.Index, devices[d].CopyStream, copy.View.Cast<Half>());
                    devices[d].CopyStream.Synchronize();
                    var got = devices[d].Download(copy);
                    for (var k = 0; k < got.Length; k++)
                    {
                        if (got[k] != Round(precision, after32[layer.Index][k]))
                            Assert.Fail($"device {d}, {layer.Name} [{k}]: copy 0x{got[k]:X4}, master {after32[layer.Index][k]:G9}");
                    }
                }
            }
            for (var d = 0; d < devices.Length; d++)
                Assert.Equal(views32[d].GradientBusBytes, 2 * views16[d].GradientBusBytes);
            Assert.Equal(2 * layout.TotalLength, views16[0].GradientBusBytes);
            // Two devices' 16-bit staging (2 x 2 bytes an element) plus the FP32 sums (4) hold what FP32 staging (2 x 4) does;
            // the server adds its 16-bit copies (2 bytes a parameter).
            Assert.Equal(eps32.HostBytes + 2 * layout.TotalLength, eps16.HostBytes);
        }
        finally
        {
            foreach (var b in buffers) b.Dispose();
        }
    }
}
