// The model layers in 16 bits against the FP32 layers on the same 16-bit weights: loss, parameter gradients and boundary
// gradients within bounds derived from the unit roundoff; half-size buffers; and the FP16 underflow of a standard GPT-2.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Kernels;
using L2L.Model.Bert;
using L2L.Model.Device;
using L2L.TestSupport;
using Xunit;
using Half = ILGPU.Half;

namespace L2L.Model.Tests;

public sealed class SixteenBitLayersTests(BackendFixture fixture)
{
    /// <summary>What one forward and backward pass over a micro-batch gives.</summary>
    private sealed record Pass(double Loss, float[][] Grads, float[] HeadInput, float[] DHeadInput, float[] DBlock0Input);

    /// <summary>Host conversions between FP32 and a storage type: round to nearest even on the way down, exact on the way up.</summary>
    private static T[] ToStorage<T>(float[] x) where T : unmanaged =>
        typeof(T) == typeof(float) ? (T[])(object)x.ToArray()
        : typeof(T) == typeof(Bf16) ? (T[])(object)x.Select(Bf16.FromSingle).ToArray()
        : (T[])(object)x.Select(v => Interop.IntAsFloat(BitConverter.HalfToUInt16Bits((System.Half)v))).ToArray();

    private static float[] ToFloat<T>(T[] x) where T : unmanaged =>
        typeof(T) == typeof(float) ? (float[])(object)x
        : typeof(T) == typeof(Bf16) ? ((Bf16[])(object)x).Select(b => b.ToSingle()).ToArray()
        : ((Half[])(object)x).Select(h => (float)BitConverter.UInt16BitsToHalf(Interop.FloatAsInt(h))).ToArray();

    /// <summary>Every weight rounded to the storage type <typeparamref name="T"/> (as FP32 values): both runs start from these.</summary>
    private static float[][] RoundedTo<T>(float[][] weights) where T : unmanaged => weights.Select(w => ToFloat(ToStorage<T>(w))).ToArray();

    /// <summary>
    /// Embedding, every block and the head forward, then the head, every block and the embedding backward, over the first
    /// micro-batch of <paramref name="ids"/> (which hold <paramref name="microBatches"/> of them), with the loss gradient
    /// scaled as the executors scale it: by 1 / the minibatch's labelled targets.
    /// </summary>
    private static Pass Run<T>(Backend backend, IModelConfig config, float[][] weights, int[] ids, int[] targets, int[]? types,
        int b, int t, int microBatches = 1, DropoutContext? dropout = null) where T : unmanaged
    {
        var layout = new ModelLayout(config);
        var layers = Models.CreateLayers<T>(backend, layout);
        layers.SetDropout(dropout);
        Assert.Equal(Precisions.Of<T>(), layers.Precision);
        var mb = new MicroBatch(config, b, t);
        var s = backend.ComputeStream;
        using var owned = new ResourceList();
        using var inputs = new MicroBatchInputs(backend, mb, microBatches, layers.Inputs);
        var labelled = inputs.Load(ids, targets, types);
        var labelledHere = targets.Take(mb.Tokens).Count(x => x != MicroBatchInputs.IgnoreIndex);
        inputs.UploadInputs(s, 0);
        inputs.UploadTargets(s, 0);
        inputs.UploadPlans(s, 0);
        var p = layout.Layers.Select(l => owned.Add(backend.Upload(ToStorage<T>(weights[l.Index]), $"p.{l.Name}"))).ToArray();
        var g = layout.Layers.Select(l => owned.Add(backend.Zeros<float>(l.Length, $"g.{l.Name}"))).ToArray();
        var x = Enumerable.Range(0, layout.Blocks.Count + 1).Select(i => owned.Add(backend.Zeros<T>(mb.ActivationLength, $"x.{i}"))).ToArray();
        var acts = layout.Blocks.Select(l => owned.Add(layers.CreateActivations(backend, mb, MemoryCategory.Other, l.Name))).ToArray();
        var dStream = owned.Add(backend.Zeros<T>(mb.ActivationLength, "dstream"));
        var scratch = owned.Add(layers.CreateScratch(backend, mb));
        int emb = layout.Embedding.Index, head = layout.Head.Index, blocks = layout.Blocks.Count;
        scratch.LossTotal.View.MemSetToZero(s);
        layers.EmbeddingForward(s, mb, p[emb].View, inputs, x[0].View, scratch);
        for (var i = 0; i < blocks; i++)
            layers.BlockForward(s, mb, layout.Blocks[i], p[i + 1].View, x[i].View, x[i + 1].View, acts[i], inputs);
        layers.HeadForwardBackward(s, mb, p[head].View, g[head].View, p[emb].View, g[emb].View, x[^1].View, inputs, dStream.View, scratch, 1f / labelled);
        var dHead = ToFloat(backend.Download(dStream));
        for (var i = blocks - 1; i >= 0; i--)
            layers.BlockBackward(s, mb, layout.Blocks[i], p[i + 1].View, g[i + 1].View, x[i].View, dStream.View, acts[i], scratch, inputs);
        var dBlock0 = ToFloat(backend.Download(dStream));
        layers.EmbeddingBackward(s, mb, p[emb].View, g[emb].View, inputs, dStream.View, scratch);
        var loss = backend.Download(scratch.LossTotal)[0] / labelledHere;
        return new Pass(loss, g.Select(backend.Download).ToArray(), ToFloat(backend.Download(x[^1])), dHead, dBlock0);
    }

    private static Pass Run(Backend backend, Precision precision, IModelConfig config, float[][] weights, int[] ids, int[] targets, int[]? types,
        int b, int t, int microBatches = 1, DropoutContext? dropout = null) => precision switch
    {
        Precision.Fp32 => Run<float>(backend, config, weights, ids, targets, types, b, t, microBatches, dropout),
        Precision.Bf16 => Run<Bf16>(backend, config, weights, ids, targets, types, b, t, microBatches, dropout),
        _ => Run<Half>(backend, config, weights, ids, targets, types, b, t, microBatches, dropout),
    };

    private static float[][] RoundedTo(Precision precision, float[][] weights) => precision == Precision.Bf16 ? RoundedTo<Bf16>(weights) : RoundedTo<Half>(weights);

    /// <summary>Unit roundoff of the storage type: 2^-8 (BF16, 8 significant bits) or 2^-11 (FP16, 11).</summary>
    private static double UnitRoundoff(Precision precision) => precision == Precision.Bf16 ? Math.Pow(2, -8) : Math.Pow(2, -11);

    /// <summary>Initial weights with biases and LayerNorm parameters moved off 0 and 1, so their paths carry signal.</summary>
    private static float[][] Weights(ModelLayout layout, int seed)
    {
        var w = Models.Initialize(layout, seed);
        var k = 0;
        foreach (var layer in layout.Layers)
        foreach (var slot in layer.Tensors.Where(t => !t.Decay))
        {
            var noise = TestData.Normal(seed * 100 + k++, (int)slot.Length, 0.2);
            var values = LayerLayout.Slice(w[layer.Index], slot);
            for (var i = 0; i < values.Length; i++) values[i] += noise[i];
        }
        return w;
    }

    private static (int[] Ids, int[] Targets) Tokens(int vocab, int n, int seed)
    {
        var rng = new Random(seed);
        var ids = Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
        var targets = Enumerable.Range(0, n).Select(i => i % 5 == 3 ? -1 : rng.Next(vocab)).ToArray();
        return (ids, targets);
    }

    /// <summary>||actual - expected|| / ||expected|| (Euclidean); 0 for two zero vectors.</summary>
    private static double RelativeError(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        double err = 0, norm = 0;
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.True(float.IsFinite(actual[i]), $"non-finite value at {i}");
            var d = (double)actual[i] - expected[i];
            err += d * d;
            norm += (double)expected[i] * expected[i];
        }
        return norm == 0 ? Math.Sqrt(err) : Math.Sqrt(err / norm);
    }

    /// <summary>
    /// Compares the 16-bit pass with the FP32 pass on the same rounded weights and inputs, norm-wise. Every 16-bit kernel
    /// computes in FP32 and rounds its result once, a relative error of at most u; a value at the end of a chain of
    /// <paramref name="depth"/> rounded ops carries at most about <paramref name="depth"/>·u (first order, the ops' condition
    /// numbers being of order 1 for normalised activations), so the bound is <paramref name="depth"/>·u for the loss, the
    /// head's input, the boundary gradients and each layer's whole gradient block. A single tensor's gradient error is
    /// measured against its layer's gradient norm: rounding errors in a sum scale with the terms summed, not with the
    /// result, and some gradients are sums that nearly cancel (BERT's key bias gradient is exactly zero in exact
    /// arithmetic; the query and key gradients are small at near-uniform attention, and partly subnormal in FP16).
    /// The rounding must also show: the 16-bit pass is not the FP32 one.
    /// </summary>
    private static void AssertClose(ModelLayout layout, Pass fp32, Pass sixteen, Precision precision, int depth, string what)
    {
        var bound = depth * UnitRoundoff(precision);
        var worst = 0.0;
        var report = new List<string>();
        void Check(string name, double error)
        {
            worst = Math.Max(worst, error);
            report.Add($"{name} {error:G3}");
            Assert.True(error <= bound, $"{what} {precision.Name()}: {name} relative error {error:G3} > {bound:G3} (depth {depth} x u)");
        }
        Check("loss", Math.Abs(sixteen.Loss - fp32.Loss) / fp32.Loss);
        Check("head input", RelativeError(fp32.HeadInput, sixteen.HeadInput));
        Check("d(head input)", RelativeError(fp32.DHeadInput, sixteen.DHeadInput));
        Check("d(block 0 input)", RelativeError(fp32.DBlock0Input, sixteen.DBlock0Input));
        foreach (var layer in layout.Layers)
        {
            var expected = fp32.Grads[layer.Index];
            var actual = sixteen.Grads[layer.Index];
            Check(layer.Name, RelativeError(expected, actual));
            var layerNorm = Math.Sqrt(expected.Sum(v => (double)v * v));
            foreach (var slot in layer.Tensors)
            {
                var e = LayerLayout.Slice(expected, slot).ToArray();
                var a = LayerLayout.Slice(actual, slot).ToArray();
                Check(slot.FullName, Math.Sqrt(e.Zip(a).Sum(p => ((double)p.Second - p.First) * ((double)p.Second - p.First))) / layerNorm);
            }
        }
        // 16-bit storage must change something: the passes are not the same bits.
        Assert.True(worst > UnitRoundoff(precision) / 64, $"{what} {precision.Name()}: the 16-bit pass is indistinguishable from FP32 ({worst:G3})");
        TestContext.Current.SendDiagnosticMessage($"{what} {precision.Name()} (bound {bound:G3}): worst {worst:G3}; {string.Join(", ", report)}");
    }

    public static TheoryData<Precision, bool, bool> GptCases => new()
    {
        { Precision.Bf16, false, false }, { Precision.Fp16, false, false }, { Precision.Bf16, true, false }, { Precision.Fp16, true, false },
        { Precision.Bf16, false, true }, { Precision.Fp16, false, true },
    };

    [Theory]
    [MemberData(nameof(GptCases))]
    public void GptLayersIn16BitsMatchFp32OnTheSameWeights(Precision precision, bool unitScaling, bool withDropout)
    {
        // With dropout (embedding and residual, p = 0.25) both passes draw the same masks: they are keyed by position, not by type.
        DropoutContext? dropout = withDropout ? new DropoutContext(new DropoutRates(0.25f, 0f, 0.25f), Seed: 11, Step: 2, MicroBatch: 1) : null;
        // Odd sizes: V 11, C 12 in 3 heads of 4, T 7 of 9 positions, B 3, two blocks; every fifth target unlabelled.
        const int b = 3, t = 7;
        var config = new GptConfig(VocabSize: 11, MaxPositions: 9, Channels: 12, Layers: 2, Heads: 3) { UnitScaling = unitScaling };
        var layout = new ModelLayout(config);
        var weights = RoundedTo(precision, Weights(layout, seed: 3));
        var (ids, targets) = Tokens(config.VocabSize, b * t, seed: 4);
        var backend = fixture.Get(DeviceKind.Cpu);
        var fp32 = Run(backend, Precision.Fp32, config, weights, ids, targets, null, b, t, dropout: dropout);
        var sixteen = Run(backend, precision, config, weights, ids, targets, null, b, t, dropout: dropout);
        // Rounded ops on the longest path: the embedding, 10 per block forward (two LayerNorms, three products and the
        // attention, GELU, two residual adds), ln_f and the logits; backward the logit gradient, the head's product and
        // LayerNorm, 8 per block (two products' input gradients, GELU, attention, two LayerNorms, two stream updates).
        // Dropout rescales by 1 / (1 - p) and rounds: once after the embedding and twice per block, forward and backward.
        var depth = 1 + 10 * config.Layers + 2 + 3 + 8 * config.Layers + (withDropout ? 2 * (1 + 2 * config.Layers) : 0);
        AssertClose(layout, fp32, sixteen, precision, depth, (unitScaling ? "unit-scaled GPT-2" : "GPT-2") + (withDropout ? " with dropout" : ""));
    }

    [Theory]
    [InlineData(Precision.Bf16)]
    [InlineData(Precision.Fp16)]
    public void BertLayersIn16BitsMatchFp32OnTheSameWeights(Precision precision)
    {
        // V 36 (32 text ids, 32 pads, 33 masks), H 16 in 2 heads, I 32, T 7, B 3, two blocks; row 1 padded after 4 tokens.
        const int b = 3, t = 7;
        var config = new BertConfig(VocabSize: 36, HiddenSize: 16, Layers: 2, Heads: 2, IntermediateSize: 32,
            MaxPositions: 16, TypeVocabSize: 2, PadTokenId: 32, MaskTokenId: 33);
        var layout = new ModelLayout(config);
        var weights = RoundedTo(precision, Weights(layout, seed: 5));
        var rng = new Random(6);
        var ids = new int[b * t];
        var targets = new int[b * t];
        var types = new int[b * t];
        for (var i = 0; i < ids.Length; i++)
        {
            var padded = i / t == 1 && i % t >= 4;
            ids[i] = padded ? config.PadTokenId : i % 3 == 0 ? config.MaskTokenId : rng.Next(32);
            targets[i] = padded || i % 3 != 0 ? MicroBatchInputs.IgnoreIndex : rng.Next(32);
            types[i] = i % t >= 3 ? 1 : 0;
        }
        var backend = fixture.Get(DeviceKind.Cpu);
        var fp32 = Run(backend, Precision.Fp32, config, weights, ids, targets, types, b, t);
        var sixteen = Run(backend, precision, config, weights, ids, targets, types, b, t);
        // Rounded ops on the longest path: the embedding's two gathers, their sum and its LayerNorm; 10 per block forward
        // (the q,k,v, output and two feed-forward products, attention, GELU, two residual adds, two LayerNorms); the
        // head's product, GELU, LayerNorm and logits. Backward: the logit gradient and the head's four, 10 per block
        // (as forward), and the embedding's recomputed sum and LayerNorm backward.
        var depth = 4 + 10 * config.Layers + 4 + 5 + 10 * config.Layers + 5;
        AssertClose(layout, fp32, sixteen, precision, depth, "BERT");
    }

    public static TheoryData<string, Precision> ModelPrecisions => new()
    {
        { "gpt2", Precision.Bf16 }, { "gpt2", Precision.Fp16 }, { "bert", Precision.Bf16 }, { "bert", Precision.Fp16 },
    };

    private static IModelConfig Small(string model) => model == "gpt2"
        ? new GptConfig(VocabSize: 11, MaxPositions: 9, Channels: 12, Layers: 2, Heads: 3)
        : new BertConfig(VocabSize: 36, HiddenSize: 16, Layers: 2, Heads: 2, IntermediateSize: 32, MaxPositions: 16, TypeVocabSize: 2, PadTokenId: 32, MaskTokenId: 33);

    [Theory]
    [MemberData(nameof(ModelPrecisions))]
    public void SixteenBitTensorsTakeHalfTheBytesAndStatisticsStayFp32(string model, Precision precision)
    {
        var mb = new MicroBatch(Small(model), 3, 7);
        var cpu = DeviceShape.Of(fixture.Get(DeviceKind.Cpu).Accelerator);
        var gpu = new DeviceShape(IsCpu: false, MaxNumThreads: 1 << 16, MaxGroupSize: 1024, WarpSize: 32);
        foreach (var device in new[] { cpu, gpu })
        {
            foreach (var (full, half) in new[]
            {
                (Models.DescribeActivations(mb, Precision.Fp32, device), Models.DescribeActivations(mb, precision, device)),
                (Models.DescribeScratch(mb, Precision.Fp32, device), Models.DescribeScratch(mb, precision, device)),
            })
            {
                var fp32 = full.ToDictionary(x => x.Name);
                foreach (var spec in half)
                {
                    // Buffers only 16-bit runs have (attention accumulators on the row path) are FP32.
                    if (!fp32.TryGetValue(spec.Name, out var wide))
                    {
                        Assert.Equal(4, spec.ElementSize);
                        Assert.True(device.IsCpu, $"{spec.Name} on the tiled path");
                        continue;
                    }
                    if (spec.Name == "scratch.attention" && spec.Length != wide.Length)
                    {
                        // The attention backward's FP32 scratch holds the 16-bit row kernels' gradient accumulators too.
                        Assert.True(device.IsCpu && spec.Length > wide.Length, spec.Name);
                        continue;
                    }
                    Assert.Equal(wide.Length, spec.Length);
                    Assert.True(spec.ElementSize == 2 ? spec.Bytes * 2 == wide.Bytes : spec.Bytes == wide.Bytes, spec.Name);
                }
                // The saved tensors are 16-bit; the reductions (LayerNorm statistics, log-sum-exp, losses) stay FP32.
                Assert.Contains(half, x => x.ElementSize == 2);
                Assert.All(half.Where(x => x.Name.EndsWith("mean1") || x.Name.EndsWith("rstd1") || x.Name.EndsWith("lse") || x.Name.EndsWith("losses")),
                    x => Assert.Equal(4, x.ElementSize));
            }
        }
        // On the tiled path a block's saved activations are exactly those of FP32 with every tensor at half the bytes.
        var tensors = Models.DescribeActivations(mb, precision, gpu).Where(x => x.ElementSize == 2).Sum(x => x.Bytes);
        var sameInFp32 = Models.DescribeActivations(mb, Precision.Fp32, gpu).Where(x => Models.DescribeActivations(mb, precision, gpu)
            .Any(h => h.Name == x.Name && h.ElementSize == 2)).Sum(x => x.Bytes);
        Assert.Equal(sameInFp32, 2 * tensors);
    }

    [Theory]
    [InlineData(Precision.Bf16)]
    [InlineData(Precision.Fp16)]
    public void AllocatedActivationsAreHalfTheFp32OnesTensorByTensor(Precision precision)
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var config = Small("gpt2");
        var mb = new MicroBatch(config, 3, 7);
        var layout = new ModelLayout(config);
        using var wide = (BlockActivations<float>)Models.CreateLayers<float>(backend, layout).CreateActivations(backend, mb, MemoryCategory.Other, "probe32");
        IModelLayers layers = precision == Precision.Bf16 ? Models.CreateLayers<Bf16>(backend, layout) : Models.CreateLayers<Half>(backend, layout);
        using var act = layers.CreateActivations(backend, mb, MemoryCategory.Other, "probe16");
        var (tensors, statistics) = act switch
        {
            BlockActivations<Bf16> a => (new[] { a.Ln1.View.LengthInBytes, a.Qkv.View.LengthInBytes, a.AttY.View.LengthInBytes, a.X1.View.LengthInBytes,
                a.Ln2.View.LengthInBytes, a.Fc.View.LengthInBytes, a.Gelu.View.LengthInBytes }, new[] { a.Mean1.View.LengthInBytes, a.Lse.View.LengthInBytes }),
            BlockActivations<Half> a => (new[] { a.Ln1.View.LengthInBytes, a.Qkv.View.LengthInBytes, a.AttY.View.LengthInBytes, a.X1.View.LengthInBytes,
                a.Ln2.View.LengthInBytes, a.Fc.View.LengthInBytes, a.Gelu.View.LengthInBytes }, new[] { a.Mean1.View.LengthInBytes, a.Lse.View.LengthInBytes }),
            _ => throw new InvalidOperationException(act.GetType().Name),
        };
        long[] wideTensors = [wide.Ln1.View.LengthInBytes, wide.Qkv.View.LengthInBytes, wide.AttY.View.LengthInBytes, wide.X1.View.LengthInBytes,
            wide.Ln2.View.LengthInBytes, wide.Fc.View.LengthInBytes, wide.Gelu.View.LengthInBytes];
        Assert.Equal(wideTensors.Select(x => x / 2), tensors);
        Assert.Equal([wide.Mean1.View.LengthInBytes, wide.Lse.View.LengthInBytes], statistics);
        // And the allocation is the description the planner reads, byte for byte.
        var described = Models.DescribeActivations(mb, precision, DeviceShape.Of(backend.Accelerator), MemoryCategory.Other, "probe16");
        Assert.Equal(described.Single(x => x.Name == "probe16.qkv").Bytes, tensors[1]);
        Assert.Equal(described.Single(x => x.Name == "probe16.lse").Bytes, statistics[1]);
    }

    /// <summary>Fraction of the entries that are nonzero in <paramref name="fp32"/> and exactly zero in <paramref name="fp16"/>.</summary>
    private static double Lost(IEnumerable<float> fp32, IEnumerable<float> fp16)
    {
        var pairs = fp32.Zip(fp16).Where(p => p.First != 0f).ToArray();
        return (double)pairs.Count(p => p.Second == 0f) / pairs.Length;
    }

    [Fact]
    public void Fp16UnderflowsTheStandardModelsGradientsButNotTheUnitScaledOnes()
    {
        // One micro-batch of 16 x 32 tokens of a 2048-micro-batch minibatch (about a million tokens, the scale GPT-2 trains
        // at): the executors scale the loss gradient by 1 / the minibatch's labelled targets, and with the 0.02-scale
        // initial weights the standard model's boundary gradients and the q,k,v gradient inside attention (near-uniform
        // probabilities at initialisation) fall below FP16's smallest subnormal 2^-24 and flush to zero in the 16-bit
        // activations, so whole rows and columns of the FP32-accumulated parameter gradients come out exactly zero. The
        // unit-scaled model's loss gradient is per token and its scales keep every tensor near 1: nothing underflows.
        const int b = 16, t = 32, microBatches = 2048;
        var backend = fixture.Get(DeviceKind.Cpu);
        var standard = new GptConfig(VocabSize: 64, MaxPositions: t, Channels: 64, Layers: 4, Heads: 4);
        var unit = standard with { UnitScaling = true };
        var layout = new ModelLayout(standard);
        var (ids, targets) = Tokens(standard.VocabSize, microBatches * b * t, seed: 9);
        (double All, double Qkv) LostIn(GptConfig config)
        {
            var weights = RoundedTo<Half>(Models.Initialize(new ModelLayout(config), 5));
            var fp32 = Run<float>(backend, config, weights, ids, targets, null, b, t, microBatches);
            var fp16 = Run<Half>(backend, config, weights, ids, targets, null, b, t, microBatches);
            IEnumerable<float> Qkv(float[][] grads) => layout.Blocks.SelectMany(l => LayerLayout.Slice(grads[l.Index], l["attn.c_attn.weight"]).ToArray());
            return (Lost(fp32.Grads.SelectMany(g => g), fp16.Grads.SelectMany(g => g)), Lost(Qkv(fp32.Grads), Qkv(fp16.Grads)));
        }
        var (standardLost, standardQkvLost) = LostIn(standard);
        var (unitLost, unitQkvLost) = LostIn(unit);
        var report = $"FP16 layers: nonzero FP32 gradients that come out exactly zero: standard {standardLost:P1} (q,k,v projection {standardQkvLost:P1}), " +
            $"unit-scaled {unitLost:P3} ({unitQkvLost:P3})";
        TestContext.Current.SendDiagnosticMessage(report);
        Assert.True(standardLost > 0.1 && standardQkvLost > 0.3, report);
        Assert.True(unitLost < 1e-3 && unitQkvLost < 1e-3, report);
    }
}
