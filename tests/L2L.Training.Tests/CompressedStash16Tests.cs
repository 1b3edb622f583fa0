// The relay's compressed stash with BF16 and FP16 activations: the same words, estimates and choice of bits as FP32 on
// the widened values, the FP32 decode rounded to 16 bits, device == host placement bit for bit, and a decode
// workspace of exactly half the bytes with the packed pool unchanged.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.Kernels;
using L2L.TestSupport;
using L2L.Training.Stash;
using Xunit;
using Half = ILGPU.Half;

namespace L2L.Training.Tests;

public sealed class CompressedStash16Tests(BackendFixture fixture)
{
    // 3 levels × 2 micro-batches of 203 values: groups of 32 leave a partial last group.
    private const int Levels = 3, MicroBatches = 2, Length = 203, Group = 32;

    public static TheoryData<Precision, StashCodec> Cases
    {
        get
        {
            var data = new TheoryData<Precision, StashCodec>();
            foreach (var p in new[] { Precision.Bf16, Precision.Fp16 })
            foreach (var c in new[] { StashCodec.Int8, StashCodec.Int2, StashCodec.Adaptive })
                data.Add(p, c);
            return data;
        }
    }

    private static StashCodecSettings Settings(StashCodec codec) => new(codec, Group, Seed: 7, BitsBudget: 5f, AdaptEvery: 1);

    /// <summary><paramref name="x"/> rounded to <paramref name="precision"/> (nearest even), as FP32.</summary>
    private static float Round(Precision precision, float x) => precision switch
    {
        Precision.Bf16 => Bf16.FromSingle(x).ToSingle(),
        Precision.Fp16 => (float)(System.Half)x,
        _ => x,
    };

    /// <summary>The stored bits of <paramref name="x"/> in <paramref name="precision"/> (FP32 bits for FP32).</summary>
    private static uint StoredBits(Precision precision, float x) => precision switch
    {
        Precision.Bf16 => Bf16.RoundBits(x),
        Precision.Fp16 => BitConverter.HalfToUInt16Bits((System.Half)x),
        _ => BitConverter.SingleToUInt32Bits(x),
    };

    /// <summary>Activations and boundary gradients per (level, micro-batch), already representable in <paramref name="precision"/>.</summary>
    private static (float[][] Inputs, float[][] Gradients) Data(Precision precision)
    {
        var inputs = new float[Levels * MicroBatches][];
        var grads = new float[Levels * MicroBatches][];
        for (var i = 0; i < inputs.Length; i++)
        {
            inputs[i] = TestData.Normal(100 + i, Length, 1.0 + i, 0.5 * i).Select(v => Round(precision, v)).ToArray();
            Array.Fill(inputs[i], inputs[i][0], 0, Group); // a constant group
            grads[i] = TestData.Normal(200 + i, Length, 0.01 * (i + 1)).Select(v => Round(precision, v)).ToArray();
        }
        return (inputs, grads);
    }

    private sealed record Outcome(uint[][] Decoded, Dictionary<string, string> State, long StashBytes, long WorkspaceBytes, long PinnedBytes, long[] EncodedBytes);

    private static Outcome Run(Backend backend, StashCodecSettings settings, StashPlacement placement, Precision precision, float[][] inputs, float[][] grads) =>
        precision switch
        {
            Precision.Fp32 => Run<float>(backend, settings, placement, precision, inputs, grads, v => v, BitConverter.SingleToUInt32Bits),
            Precision.Bf16 => Run<Bf16>(backend, settings, placement, precision, inputs, grads, Bf16.FromSingle, b => b.Bits),
            _ => Run<Half>(backend, settings, placement, precision, inputs, grads,
                v => Interop.IntAsFloat(BitConverter.HalfToUInt16Bits((System.Half)v)), h => Interop.FloatAsInt(h)),
        };

    /// <summary>One step as the relay drives the stash: encode (and store) every level's inputs, then from the top level down observe the gradient, (fetch) and decode.</summary>
    private static Outcome Run<T>(Backend backend, StashCodecSettings settings, StashPlacement placement, Precision precision, float[][] inputs, float[][] grads,
        Func<float, T> store, Func<T, uint> bits) where T : unmanaged
    {
        var s = backend.ComputeStream;
        var memory = backend.Memory;
        long stash0 = memory.Current(MemoryCategory.Stash), workspace0 = memory.Current(MemoryCategory.Workspace), pinned0 = memory.PinnedHostBytes;
        using var stash = new CompressedStash(backend, settings, placement, Levels, MicroBatches, Length, precision: precision);
        var sizes = (memory.Current(MemoryCategory.Stash) - stash0, memory.Current(MemoryCategory.Workspace) - workspace0, memory.PinnedHostBytes - pinned0);
        using var partials = backend.Zeros<float>(ReduceOps.PartialsLength(backend));
        var x = inputs.Select(v => backend.Upload(v.Select(store).ToArray())).ToArray();
        var dY = grads.Select(v => backend.Upload(v.Select(store).ToArray())).ToArray();
        try
        {
            stash.BeginStep(s, 3, Levels);
            for (var l = 0; l < Levels; l++)
            for (var u = 0; u < MicroBatches; u++)
            {
                stash.Encode(s, 3, l, u, u % 2, x[l * MicroBatches + u].View);
                if (placement == StashPlacement.Host) stash.Store(s, l, u, u % 2);
                s.Synchronize();
            }
            var decoded = new uint[inputs.Length][];
            for (var l = Levels - 1; l >= 0; l--)
            for (var u = 0; u < MicroBatches; u++)
            {
                stash.ObserveGradient(s, l, u, dY[l * MicroBatches + u].View, partials.View);
                if (placement == StashPlacement.Host) stash.Fetch(s, l, u, u % 2);
                var view = stash.Decode<T>(s, l, u, u % 2);
                var host = new T[Length];
                s.Synchronize();
                view.CopyToCPU(s, host);
                s.Synchronize();
                decoded[l * MicroBatches + u] = host.Select(bits).ToArray();
            }
            var encodedBytes = Enumerable.Range(0, Levels).Select(l => stash.EncodedBytes(l)).ToArray();
            stash.EndStep(s);
            var state = new Dictionary<string, string>();
            stash.SaveState(state);
            return new Outcome(decoded, state, sizes.Item1, sizes.Item2, sizes.Item3, encodedBytes);
        }
        finally
        {
            foreach (var b in x.Concat(dY)) b.Dispose();
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SixteenBitStashDecodesTheFp32StashRoundedAndPlacementsAgree(Precision precision, StashCodec codec)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var settings = Settings(codec);
        var (inputs, grads) = Data(precision);
        var wide = Run(backend, settings, StashPlacement.Device, Precision.Fp32, inputs, grads);
        var device = Run(backend, settings, StashPlacement.Device, precision, inputs, grads);
        var host = Run(backend, settings, StashPlacement.Host, precision, inputs, grads);
        for (var i = 0; i < inputs.Length; i++)
        {
            Assert.Equal(device.Decoded[i], host.Decoded[i]);
            var rounded = wide.Decoded[i].Select(b => StoredBits(precision, BitConverter.UInt32BitsToSingle(b))).ToArray();
            Assert.Equal(rounded, device.Decoded[i]);
            // The constant group comes back exactly.
            Assert.All(Enumerable.Range(0, Group), j => Assert.Equal(StoredBits(precision, inputs[i][j]), device.Decoded[i][j]));
        }
        // Same estimates (range energy × gradient square) and so the same next bits, for the adaptive codec; nothing otherwise.
        Assert.Equal(wide.State, device.State);
        Assert.Equal(wide.State, host.State);
        Assert.Equal(wide.EncodedBytes, device.EncodedBytes);
        if (codec == StashCodec.Adaptive)
        {
            var coefficients = device.State[AdaptiveBits.CoefficientsKey].Split(',').Select(t => double.Parse(t, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(Levels, coefficients.Length);
            Assert.All(coefficients, c => Assert.True(c > 0 && double.IsFinite(c), $"coefficient {c}"));
        }
        else
        {
            Assert.Empty(device.State);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void DecodeWorkspaceIsHalfAndThePackedBytesAreUnchanged(Precision precision, StashCodec codec)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var settings = Settings(codec);
        var (inputs, grads) = Data(precision);
        var estimates = codec == StashCodec.Adaptive ? 4L * 2 * Levels * MicroBatches : 0;
        foreach (var placement in new[] { StashPlacement.Device, StashPlacement.Host })
        {
            var wide = Run(backend, settings, placement, Precision.Fp32, inputs, grads);
            var narrow = Run(backend, settings, placement, precision, inputs, grads);
            Assert.Equal(4L * Length + estimates, wide.WorkspaceBytes);
            Assert.Equal(2L * Length + estimates, narrow.WorkspaceBytes);
            Assert.Equal(wide.StashBytes, narrow.StashBytes);
            Assert.Equal(wide.PinnedBytes, narrow.PinnedBytes);
            Assert.True(narrow.StashBytes > 0);

            // The static description and footprint predict the measured bytes in both precisions.
            foreach (var (p, measured) in new[] { (Precision.Fp32, wide), (precision, narrow) })
            {
                var footprint = StashFootprint.Of(settings, placement, Levels, MicroBatches, Length, p);
                Assert.Equal(measured.StashBytes, footprint.StashBytes);
                Assert.Equal(measured.WorkspaceBytes, footprint.WorkspaceBytes);
                Assert.Equal(measured.PinnedBytes, footprint.HostBytes);
                var (deviceSpecs, hostSpecs, _) = CompressedStash.Describe(settings, placement, Levels, MicroBatches, Length, p);
                Assert.Equal(measured.StashBytes + measured.WorkspaceBytes, deviceSpecs.Sum(b => b.Bytes));
                Assert.Equal(measured.PinnedBytes, hostSpecs.Sum(b => b.Bytes));
                var decoded = deviceSpecs.Named("stash-decoded");
                Assert.Equal(p.ElementSize(), decoded.ElementSize);
                Assert.Equal(Length, decoded.Length);
            }
            Assert.Equal(CompressedStash.Describe(settings, placement, Levels, MicroBatches, Length).StepBusBytes,
                CompressedStash.Describe(settings, placement, Levels, MicroBatches, Length, precision).StepBusBytes);
        }
    }

    [Fact]
    public void DecodeInAnotherTypeThanThePrecisionIsRefused()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        using var stash = new CompressedStash(backend, Settings(StashCodec.Int4), StashPlacement.Device, 1, 1, Length, precision: Precision.Bf16);
        Assert.Equal(Precision.Bf16, stash.Precision);
        stash.BeginStep(backend.ComputeStream, 0, 1);
        var error = Assert.Throws<ArgumentException>(() => stash.Decode<float>(backend.ComputeStream, 0, 0, 0));
        Assert.Contains("bf16", error.Message);
        Assert.Throws<ArgumentException>(() => stash.Decode<Half>(backend.ComputeStream, 0, 0, 0));
    }
}
