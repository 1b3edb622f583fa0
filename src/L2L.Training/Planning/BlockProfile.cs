// The repeated block, profiled once per micro-batch shape on the device: its forward and backward, the head and the embedding.
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Model;
using L2L.Model.Device;

namespace L2L.Training.Planning;

/// <summary>
/// Measured seconds of one micro-batch of <paramref name="MicroBatchSize"/> × <paramref name="SeqLen"/> through one block
/// (forward, backward), the head with its loss and backward, and the embedding (forward and backward), for the model
/// whose block shape <paramref name="Model"/> names (<see cref="BlockProfile.ModelKey"/>).
/// </summary>
public sealed record BlockTiming(string Model, int MicroBatchSize, int SeqLen, double BlockForward, double BlockBackward, double Head, double Embedding);

/// <summary>Runs a model's layers on one micro-batch to time them (TAP's profiling of the unique block).</summary>
public static class BlockProfile
{
    /// <summary>A key for a model's per-block cost: its one-block config (depth does not change a block's time).</summary>
    public static string ModelKey(IModelConfig config) =>
        $"{config.ModelType}-{Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(config.WithLayers(1).ToJson())))[..12].ToLowerInvariant()}";

    /// <summary>
    /// Times <paramref name="config"/>'s layers at micro-batches of <paramref name="microBatchSize"/> × <paramref name="seqLen"/>
    /// on <paramref name="backend"/>: the median of <paramref name="repeats"/> passes after one warm-up (zero weights and
    /// token 0 everywhere: the kernels do the same work whatever the values).
    /// </summary>
    public static BlockTiming Measure(Backend backend, IModelConfig config, int microBatchSize, int seqLen, int repeats = 5)
    {
        var one = config.WithLayers(1);
        var layout = new ModelLayout(one);
        var mb = new MicroBatch(one, microBatchSize, seqLen);
        var layers = Models.CreateLayers<float>(backend, layout);
        var s = backend.ComputeStream;
        using var owned = new ResourceList();
        DeviceBuffer<float> F(long length, string name)
        {
            var b = owned.Add(backend.Allocate<float>(length, MemoryCategory.Other, $"profile.{name}"));
            b.View.MemSetToZero(s);
            return b;
        }
        var block = layout.Blocks[0];
        var p = F(block.Length, "block");
        var g = F(block.Length, "block.grads");
        var emb = F(layout.Embedding.Length, "embedding");
        var embGrads = F(layout.Embedding.Length, "embedding.grads");
        var head = F(layout.Head.Length, "head");
        var headGrads = F(layout.Head.Length, "head.grads");
        var x = F(mb.ActivationLength, "x");
        var y = F(mb.ActivationLength, "y");
        var dx = F(mb.ActivationLength, "dx");
        var act = owned.Add(layers.CreateActivations(backend, mb));
        var scratch = owned.Add(layers.CreateScratch(backend, mb));
        var inputs = owned.Add(new MicroBatchInputs(backend, mb, 1, layers.Inputs));
        var ids = new int[mb.Tokens];
        inputs.Load(ids, ids);
        inputs.UploadInputs(s, 0);
        inputs.UploadTargets(s, 0);
        inputs.UploadPlans(s, 0);
        var forward = Median(s, repeats, () => layers.BlockForward(s, mb, block, p.View, x.View, y.View, act, inputs));
        var backward = Median(s, repeats, () => layers.BlockBackward(s, mb, block, p.View, g.View, x.View, dx.View, act, scratch, inputs));
        var headTime = Median(s, repeats, () => layers.HeadForwardBackward(s, mb, head.View, headGrads.View, emb.View, embGrads.View, y.View, inputs, dx.View, scratch, 1f));
        var embedding = Median(s, repeats, () =>
        {
            layers.EmbeddingForward(s, mb, emb.View, inputs, x.View, scratch);
            layers.EmbeddingBackward(s, mb, emb.View, embGrads.View, inputs, dx.View, scratch);
        });
        s.Synchronize();
        return new BlockTiming(ModelKey(config), microBatchSize, seqLen, forward, backward, headTime, embedding);
    }

    private static double Median(AcceleratorStream stream, int repeats, Action pass)
    {
        pass();
        stream.Synchronize();
        var times = new double[Math.Max(1, repeats)];
        for (var r = 0; r < times.Length; r++)
        {
            var clock = Stopwatch.StartNew();
            pass();
            stream.Synchronize();
            times[r] = clock.Elapsed.TotalSeconds;
        }
        Array.Sort(times);
        return times[times.Length / 2];
    }
}
