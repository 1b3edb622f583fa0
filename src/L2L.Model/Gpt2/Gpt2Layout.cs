// GPT-2's name table: the tensors of the embedding, of each pre-LN block and of the head, with Hugging Face names and shapes.
namespace L2L.Model.Gpt2;

/// <summary>The GPT-2 layers: <c>embedding</c> (<c>wte</c>, <c>wpe</c>), <c>h.0</c> … <c>h.{L-1}</c>, <c>head</c> (<c>ln_f</c>).</summary>
internal static class Gpt2Layout
{
    public static List<LayerLayout> Layers(GptConfig config)
    {
        int c = config.Channels;
        Func<string, float> lr = name => UnitScales.LearningRateScale(config, name);
        var layers = new List<LayerLayout>
        {
            new(0, "embedding", LayerKind.Embedding,
            [
                ("wte.weight", [config.VocabSize, c], true),
                ("wpe.weight", [config.MaxPositions, c], true),
            ], lr),
        };
        for (var i = 0; i < config.Layers; i++)
        {
            layers.Add(new LayerLayout(i + 1, $"h.{i}", LayerKind.Block,
            [
                ("ln_1.weight", [c], false),
                ("ln_1.bias", [c], false),
                ("attn.c_attn.weight", [c, 3 * c], true),
                ("attn.c_attn.bias", [3 * c], false),
                ("attn.c_proj.weight", [c, c], true),
                ("attn.c_proj.bias", [c], false),
                ("ln_2.weight", [c], false),
                ("ln_2.bias", [c], false),
                ("mlp.c_fc.weight", [c, 4 * c], true),
                ("mlp.c_fc.bias", [4 * c], false),
                ("mlp.c_proj.weight", [4 * c, c], true),
                ("mlp.c_proj.bias", [c], false),
            ], lr));
        }
        layers.Add(new LayerLayout(config.Layers + 1, "head", LayerKind.Head,
        [
            ("ln_f.weight", [c], false),
            ("ln_f.bias", [c], false),
        ], lr));
        return layers;
    }
}
