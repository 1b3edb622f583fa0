// The engine's BERT against an independent double-precision BertForMaskedLM: the MLM loss, and every tensor's gradient by finite differences.
using L2L.Backends;
using L2L.Model;
using L2L.Model.Bert;
using L2L.Model.Device;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests;

public sealed class BertReferenceTests(BackendFixture fixture)
{
    private const int B = 3, T = 7, Pad = 21;

    private static readonly BertConfig Config = new(VocabSize: 23, HiddenSize: 8, Layers: 2, Heads: 2, IntermediateSize: 12,
        MaxPositions: 10, TypeVocabSize: 2, LayerNormEpsilon: 1e-12f, PadTokenId: Pad, MaskTokenId: 22);

    private static readonly BertReference.Dims Dims = new(23, 8, 2, 2, 12, 10, 2, 1e-12, Pad);

    // Sequence 0 is full, sequence 1 ends in three pads, sequence 2 is mostly padding; some labels sit on pads'
    // neighbours, most positions are unlabelled, and the second half of each sequence is token type 1.
    private static (int[] Ids, int[] Types, int[] Labels) Batch()
    {
        int[] ids = [3, 22, 7, 1, 22, 0, 15, 4, 9, 22, 12, Pad, Pad, Pad, 22, 5, Pad, Pad, Pad, Pad, Pad];
        int[] labels = [-1, 8, -1, 1, -1, -1, 19, -1, 9, 2, -1, -1, -1, -1, 0, -1, -1, -1, -1, -1, -1];
        var types = Enumerable.Range(0, B * T).Select(i => i % T >= 4 ? 1 : 0).ToArray();
        return (ids, types, labels);
    }

    private static float[][] EngineWeights(ModelLayout layout, IReadOnlyDictionary<string, float[]> hf)
    {
        var layers = layout.Layers.Select(l => new float[l.Length]).ToArray();
        foreach (var layer in layout.Layers)
            foreach (var slot in layer.Tensors)
                hf[slot.FullName].CopyTo(LayerLayout.Slice(layers[layer.Index], slot));
        return layers;
    }

    [Fact]
    public void LossAndGradientsMatchTheDoubleReference()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        var hf = BertReference.RandomParameters(Dims, seed: 5);
        var (ids, types, labels) = Batch();
        var reference = BertReference.Forward(hf, Dims, ids, types, labels, B, T);
        Assert.Equal(6, reference.LabelCount);

        // One SGD step with learning rate 1 and no decay: the weights move by exactly minus the gradient.
        var w0 = EngineWeights(layout, hf);
        double loss;
        float[][] w1;
        using (var executor = new ConventionalExecutor(backend, layout, w0, new OptimizerSettings(OptimizerKind.Sgd, 1f),
                   new LearningRateSchedule(ScheduleKind.Constant, 1f), new MicroBatch(Config, 1, T), B))
        {
            loss = executor.Step(0, ids, labels, types).Loss;
            w1 = executor.Weights();
        }
        // Micro-batches of one sequence each, normalised together by the minibatch's 6 labels.
        Assert.Equal(reference.Loss, loss, Math.Abs(reference.Loss) * 1e-5);

        // Every tensor's gradient at its largest entry and at a fixed one, against central differences of the reference loss.
        foreach (var layer in layout.Layers)
        {
            foreach (var slot in layer.Tensors)
            {
                var grad = new double[slot.Length];
                for (var k = 0; k < slot.Length; k++)
                    grad[k] = (double)w0[layer.Index][slot.Offset + k] - w1[layer.Index][slot.Offset + k];
                var largest = Enumerable.Range(0, grad.Length).MaxBy(k => Math.Abs(grad[k]));
                foreach (var k in new[] { largest, (int)(slot.Length * 2 / 3) })
                {
                    var values = hf[slot.FullName];
                    var original = values[k];
                    const float h = 1e-2f;
                    values[k] = original + h;
                    var plus = BertReference.Forward(hf, Dims, ids, types, labels, B, T).Loss;
                    values[k] = original - h;
                    var minus = BertReference.Forward(hf, Dims, ids, types, labels, B, T).Loss;
                    values[k] = original;
                    var fd = (plus - minus) / ((double)(original + h) - (original - h));
                    Assert.True(Math.Abs(fd - grad[k]) <= 2e-4 + 2e-2 * Math.Abs(fd),
                        $"d loss / d {slot.FullName}[{k}]: engine {grad[k]:G6}, finite difference {fd:G6}");
                }
            }
        }
    }

    [Fact]
    public void EvaluationReportsTheMeanOverLabelledPositions()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var layout = new ModelLayout(Config);
        var hf = BertReference.RandomParameters(Dims, seed: 6);
        var (ids, _, labels) = Batch();
        var source = new FixedBatches(ids, labels);
        using var evaluator = new Evaluator(backend, layout, EngineWeights(layout, hf), B, T);
        var result = evaluator.Evaluate(source, 2); // the same batch twice: the mean is that batch's
        var reference = BertReference.Forward(hf, Dims, ids, null, labels, B, T);
        Assert.Equal(2 * 6, result.Tokens);
        Assert.Equal(reference.Loss, result.Loss, Math.Abs(reference.Loss) * 1e-5);
    }

    private sealed class FixedBatches(int[] ids, int[] labels) : L2L.Model.Data.IBatchSource
    {
        public int Batch => B;
        public int SeqLen => T;
        public void Fill(long step, Span<int> inputs, Span<int> targets)
        {
            ids.CopyTo(inputs);
            labels.CopyTo(targets);
        }
    }
}
